"""The environment that wires a stock powermem-server to this gateway.

powermem 1.1.7 reads its LLM from `LLM_PROVIDER`/`LLM_MODEL`/`LLM_API_KEY` plus a per-provider
base URL (`OPENAI_LLM_BASE_URL`, `ANTHROPIC_LLM_BASE_URL`, …; see powermem/config_loader.py
and powermem/integrations/llm/config/*.py). We keep every storage and embedding setting of the
user's `.env`, take its LLM settings out (they become the relay's default LLM), and point
powermem's OpenAI client at the relay. OpenTelemetry's FastAPI + HTTPX instrumentations then
copy the `baggage` of each incoming request onto the LLM calls it causes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from gateway.errors import InvalidConfig
from gateway.instances.model import InstanceConfig

__all__ = [
    "RELAY_MODEL",
    "UnportableValue",
    "client_rate_limit",
    "default_llm",
    "is_replaced_setting",
    "own_headers",
    "read_env_file",
    "render_env",
    "upstream_environment",
]

# The model name powermem sends to the relay; the relay replaces it with the instance's model.
RELAY_MODEL = "gateway-relay"

# Far above any real load: powermem's per-route limit keys on the client IP, and behind the
# gateway every client has the gateway's IP (DESIGN.md §2). Limits per instance live here.
_RATE_LIMIT_PER_MINUTE = "1000000"

# Names that only ever configure powermem's LLM (never its embedder, reranker or storage),
# plus OPENAI_BASE_URL and OPENAI_API_BASE (see upstream_environment). OPENAI_API_KEY /
# DASHSCOPE_* / QWEN_API_KEY / AZURE_* / ZAI_API_KEY / GOOGLE_API_KEY stay: powermem's
# embedders fall back to them.
_LLM_ONLY = re.compile(
    r"^(LLM_.*|OPENAI_BASE_URL|OPENAI_API_BASE|[A-Z]+_LLM_BASE_URL|[A-Z]+_LLM_DEFAULT_HEADERS|ANTHROPIC_.*|DEEPSEEK_.*"
    r"|OPENROUTER_.*|ZAI_BASE_URL|ZHIPU_API_KEY|VLLM_API_KEY|GEMINI_API_KEY"
    r"|SILICONFLOW_API_KEY|OTEL_.*)$"
)

# powermem also loads the `.env` it finds itself (cwd, then ~/.powermem/.env) with
# override=False, which would bring removed names back. An empty value is "set" for that
# loader and "off" for powermem: OPENROUTER_API_KEY would otherwise divert the OpenAI client
# to openrouter.ai, and default headers would ride along to the relay.
_SHADOWED = ("OPENROUTER_API_KEY", "LLM_DEFAULT_HEADERS", "OPENAI_LLM_DEFAULT_HEADERS")


def is_replaced_setting(name: str) -> bool:
    """Whether `upstream_environment` drops this variable (LLM and OpenTelemetry settings)."""
    return _LLM_ONLY.match(name) is not None


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a dotenv file as powermem reads them; a missing file is empty."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _first(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        if value := env.get(name, "").strip():
            return value
    return ""


# provider → (key variables after LLM_API_KEY, base-URL variables), in powermem's precedence.
_PROVIDER_VARS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openai": (("OPENAI_API_KEY",), ("OPENAI_LLM_BASE_URL", "OPENAI_BASE_URL")),
    "anthropic": (("ANTHROPIC_API_KEY",), ("ANTHROPIC_LLM_BASE_URL", "ANTHROPIC_BASE_URL")),
    "deepseek": (("DEEPSEEK_API_KEY",), ("DEEPSEEK_LLM_BASE_URL", "DEEPSEEK_API_BASE")),
    "qwen": (("QWEN_API_KEY", "DASHSCOPE_API_KEY"), ("QWEN_LLM_BASE_URL",)),
    "siliconflow": (
        ("SILICONFLOW_API_KEY", "OPENAI_API_KEY"),
        ("SILICONFLOW_LLM_BASE_URL", "OPENAI_LLM_BASE_URL"),
    ),
    "zai": (("ZAI_API_KEY", "ZHIPU_API_KEY"), ("ZAI_BASE_URL",)),
    "ollama": ((), ("OLLAMA_LLM_BASE_URL",)),
    "vllm": (("VLLM_API_KEY",), ("VLLM_LLM_BASE_URL",)),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), ()),
    "azure": (
        ("AZURE_OPENAI_API_KEY", "AZURE_API_KEY"),
        ("AZURE_ENDPOINT", "AZURE_OPENAI_ENDPOINT"),
    ),
}


def _openai_compatible_url(provider: str, url: str) -> str:
    """powermem speaks some providers' native APIs; the relay speaks their OpenAI-compatible
    ones, so translate the base URLs that differ."""
    url = url.rstrip("/")
    if not url:
        return ""
    if provider == "qwen" and url.endswith("/api/v1"):
        return url[: -len("/api/v1")] + "/compatible-mode/v1"
    if provider == "ollama" and not url.endswith("/v1"):
        return url + "/v1"
    if provider == "azure" and "/openai" not in url:
        return url + "/openai/v1"
    if provider == "deepseek" and url == "https://api.deepseek.com":
        return url + "/v1"
    return url


def default_llm(env: Mapping[str, str]) -> InstanceConfig | None:
    """The `.env`'s own LLM as an instance config: the relay's fallback for unbound requests.

    None when the file configures no usable LLM (no provider and no key). Raises
    `InvalidConfig` when it names one the relay cannot serve.
    """
    provider = env.get("LLM_PROVIDER", "").strip().lower()
    # powermem's default provider is qwen, keyed by LLM_API_KEY / QWEN_API_KEY / DASHSCOPE_API_KEY.
    effective = provider or "qwen"
    if effective == "openai" and env.get("OPENROUTER_API_KEY", "").strip():
        # powermem's OpenAI client switches to OpenRouter whenever this variable is set.
        key = env["OPENROUTER_API_KEY"].strip()
        url = _first(env, "LLM_OPENROUTER_BASE_URL", "OPENROUTER_API_BASE")
        model = env.get("LLM_MODEL", "").strip() or "gpt-4o-mini"
        return InstanceConfig.parse(provider="openrouter", model=model, api_key=key, base_url=url)
    if effective == "noop":
        return None
    if effective not in _PROVIDER_VARS:
        raise InvalidConfig(
            f"LLM_PROVIDER={effective[:40]!r} in the .env cannot be served by the relay; "
            f"use one of: {', '.join(sorted(_PROVIDER_VARS))}.",
            details={"field": "LLM_PROVIDER"},
        )
    key_vars, url_vars = _PROVIDER_VARS[effective]
    key = _first(env, "LLM_API_KEY", *key_vars)
    if not provider and not key:
        return None
    # powermem's LLMSettings default: qwen-plus for qwen, gpt-4o-mini for everything else.
    model = env.get("LLM_MODEL", "").strip()
    if effective == "azure":
        model = model or env.get("AZURE_DEPLOYMENT", "").strip()
    model = model or ("qwen-plus" if effective == "qwen" else "gpt-4o-mini")
    url = _openai_compatible_url(effective, _first(env, *url_vars))
    return InstanceConfig.parse(provider=effective, model=model, api_key=key, base_url=url)


def upstream_environment(
    env: Mapping[str, str],
    *,
    relay_url: str,
    relay_token: str,
    data_dir: Path | None,
) -> dict[str, str]:
    """Variables for a stock powermem-server whose every LLM call goes through the relay.

    `env` is the user's `.env` (storage, embedder…); the result holds only powermem's own
    settings, never the caller's process environment.
    """
    out = {k: v for k, v in env.items() if not _LLM_ONLY.match(k)}
    out.update(dict.fromkeys(_SHADOWED, ""))
    # powermem's OpenAI LLM and embedder configs accept `openai_base_url` as their first
    # alias, and pydantic-settings matches environment names without regard to case: an
    # OPENAI_BASE_URL in powermem's environment wins over OPENAI_LLM_BASE_URL, so its LLM
    # calls would skip the relay (and carry the relay token elsewhere). It never reaches
    # powermem (see _LLM_ONLY); the embedder keeps the endpoint it used, made explicit.
    fallback = _first(env, "OPENAI_API_BASE", "OPENAI_BASE_URL")
    if fallback and not env.get("OPENAI_EMBEDDING_BASE_URL", "").strip():
        out["OPENAI_EMBEDDING_BASE_URL"] = fallback
    out.update(
        {
            "LLM_PROVIDER": "openai",
            "LLM_MODEL": RELAY_MODEL,
            "LLM_API_KEY": relay_token,
            "OPENAI_LLM_BASE_URL": relay_url.rstrip("/"),
            # W3C baggage in, W3C baggage out; nothing is exported anywhere.
            "OTEL_PROPAGATORS": "tracecontext,baggage",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # Spans are never exported, so do not record them: propagation works without it.
            "OTEL_TRACES_SAMPLER": "always_off",
            "OTEL_SERVICE_NAME": "powermem-server",
            "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "api/v1/system/health",
            "POWERMEM_SERVER_RATE_LIMIT_ENABLED": "true",
            "POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE": _RATE_LIMIT_PER_MINUTE,
        }
    )
    if data_dir is not None:
        # Relative defaults (server.log, ./logs/…) would land in whatever the cwd happens to be.
        logs = data_dir / "logs"
        out.setdefault("POWERMEM_SERVER_LOG_FILE", str(logs / "powermem-server.log"))
        out.setdefault("LOGGING_FILE", str(logs / "powermem.log"))
        out.setdefault("AUDIT_LOG_FILE", str(logs / "audit.log"))
    return out


class UnportableValue(InvalidConfig):
    """A value no env-file format can carry the same way for every reader."""


# What docker/podman `--env-file`, compose `env_file`, systemd `EnvironmentFile` and
# python-dotenv all read back unchanged when written bare: no quotes, no escapes, no
# expansion. Leading/trailing blanks, a leading quote, `#` after a blank (a comment for
# dotenv and systemd), `${` (expanded by dotenv), backslashes (escapes for systemd) and line
# breaks would each be read differently by one of them.
_UNPORTABLE = re.compile(r"^\s|\s$|^[\'\"#]|\s#|\$\{|\\|[\r\n\0]")


def render_env(env: Mapping[str, str]) -> str:
    """`KEY=value` lines, sorted, in the one format every env-file reader agrees on.

    Values are written bare, an empty value as `KEY=`. A value that some reader would
    change (see `_UNPORTABLE`) raises `UnportableValue` naming the variable, rather than
    producing a file that works with one tool and silently breaks another.

    The output contains the relay token and whatever secrets the `.env` holds (storage
    passwords, embedding keys): it is meant for the operator's own server configuration.
    """
    for name, value in env.items():
        if _UNPORTABLE.search(value):
            raise UnportableValue(
                f"{name} in the .env has a value that env-file readers disagree about "
                "(surrounding blanks, quotes, '#', '${', backslashes or line breaks); set "
                f"{name} in that server's environment directly, or simplify the value.",
                details={"field": name},
            )
    return "".join(f"{k}={v}\n" for k, v in sorted(env.items()))


def _boolish(value: str) -> bool | None:
    text = value.strip().lower()
    if text in {"1", "true", "t", "yes", "y", "on", "enabled"}:
        return True
    if text in {"0", "false", "f", "no", "n", "off", "disabled"}:
        return False
    return None


# powermem's own default (server/config.py: rate_limit_per_minute).
POWERMEM_RATE_LIMIT_PER_MINUTE = 100


def client_rate_limit(env: Mapping[str, str]) -> int | None:
    """powermem's per-client limit (requests per minute) as its `.env` sets it; None: off.

    Behind the gateway powermem sees one client (the gateway), so the gateway runs it with
    that limit lifted and applies this one per client address instead (issue 11.7).
    """
    if _boolish(env.get("POWERMEM_SERVER_RATE_LIMIT_ENABLED", "true")) is False:
        return None
    raw = env.get("POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE", "").strip()
    if not raw:
        return POWERMEM_RATE_LIMIT_PER_MINUTE
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidConfig(
            f"POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE={raw[:20]!r} in the .env is not a positive "
            "whole number of requests per minute.",
            details={"field": "POWERMEM_SERVER_RATE_LIMIT_PER_MINUTE"},
        )
    return int(raw)


def own_headers(env: Mapping[str, str]) -> dict[str, str]:
    """Headers for the gateway's own calls to powermem: its API key when its auth is on."""
    if not _boolish(env.get("POWERMEM_SERVER_AUTH_ENABLED", "false")):
        return {}
    keys = [k.strip() for k in env.get("POWERMEM_SERVER_API_KEYS", "").split(",") if k.strip()]
    return {"X-API-Key": keys[0]} if keys else {}
