"""A coding tool's LLM settings, read from where that tool itself keeps them.

Only what the tools really store is read:
- Claude Code: the `env` block of `~/.claude/settings.json` (it wins over the shell, as in
  Claude Code), then the process environment: ANTHROPIC_MODEL, ANTHROPIC_BASE_URL,
  ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN; a full model name in its top-level `model`.
- Codex: `$CODEX_HOME/config.toml` (default `~/.codex`): `model`, `model_provider` and that
  provider's `[model_providers.<id>]` `base_url` / `env_key`; the key from that variable,
  else OPENAI_API_KEY, else the `OPENAI_API_KEY` of Codex's `auth.json`.
- OpenCode: `~/.config/opencode/opencode.json`: `model` as `provider/model`, that provider's
  `options.baseURL` and `options.apiKey` (`{env:NAME}` is followed); else `<PROVIDER>_API_KEY`,
  else the `api` entry of `~/.local/share/opencode/auth.json`.
- Cursor keeps nothing we can read reliably: flags only.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.providers import PROVIDERS

__all__ = ["Found", "defaults_for"]

# Claude Code's model aliases name no model a provider knows.
_CLAUDE_ALIASES = {"default", "sonnet", "opus", "haiku", "opusplan", "best"}
_OPENCODE_PROVIDERS = {"google": "gemini", "azure": "azure", "zhipuai": "zai"}
_ENV_REF = re.compile(r"^\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass
class Found:
    """What was found; `api_key` is plaintext and never printed. `where` says where from."""

    provider: str = ""
    model: str = ""
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    # The variable the tool's own config names for its key, when that variable is unset.
    missing_key: str = ""
    where: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, name: str, value: object, where: str) -> None:
        if isinstance(value, str) and value.strip() and not getattr(self, name):
            setattr(self, name, value.strip())
            self.where[name] = where


def _json_file(path: Path, found: Found) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        found.warnings.append(f"ignored {path}: {type(exc).__name__}")
        return {}
    return data if isinstance(data, dict) else {}


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def claude_code(home: Path, environ: Mapping[str, str]) -> Found:
    found = Found(
        provider="anthropic", where={"provider": "Claude Code (it speaks the Anthropic API)"}
    )
    path = home / ".claude" / "settings.json"
    settings = _json_file(path, found)
    env = _table(settings.get("env"))
    shown = "~/.claude/settings.json"
    for source, values in ((f"{shown} env", env), ("environment", environ)):
        found.set("model", values.get("ANTHROPIC_MODEL"), f"ANTHROPIC_MODEL ({source})")
        found.set("base_url", values.get("ANTHROPIC_BASE_URL"), f"ANTHROPIC_BASE_URL ({source})")
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
            found.set("api_key", values.get(name), f"{name} ({source})")
    model = settings.get("model")
    if isinstance(model, str) and model.split("[")[0].strip().lower() not in _CLAUDE_ALIASES:
        found.set("model", model, f"model ({shown})")
    return found


def codex(home: Path, environ: Mapping[str, str]) -> Found:
    found = Found()
    codex_home = Path(environ["CODEX_HOME"]) if environ.get("CODEX_HOME") else home / ".codex"
    path = codex_home / "config.toml"
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        config = {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        found.warnings.append(f"ignored {path}: {type(exc).__name__}")
        config = {}
    shown = f"{path}"
    found.set("model", config.get("model"), f"model ({shown})")
    provider_id = str(config.get("model_provider") or "openai")
    table = _table(_table(config.get("model_providers")).get(provider_id))
    found.set("base_url", table.get("base_url"), f"model_providers.{provider_id}.base_url")
    env_key = table.get("env_key")
    if isinstance(env_key, str) and env_key:
        found.set("api_key", environ.get(env_key), f"{env_key} (environment)")
    found.set(
        "api_key",
        table.get("experimental_bearer_token"),
        f"model_providers.{provider_id}.experimental_bearer_token",
    )
    if isinstance(env_key, str) and env_key and not found.api_key:
        found.missing_key = env_key
    if provider_id == "openai" or not env_key:
        found.set("api_key", environ.get("OPENAI_API_KEY"), "OPENAI_API_KEY (environment)")
        auth = _json_file(codex_home / "auth.json", found)
        found.set("api_key", auth.get("OPENAI_API_KEY"), f"{codex_home / 'auth.json'}")
    _provider(found, provider_id, f"model_provider ({shown})")
    return found


def _provider(found: Found, tool_id: str, where: str) -> None:
    """The gateway provider for a tool's provider id; unknown ids with a base URL are
    OpenAI-compatible (keyless ones as `vllm`, the gateway's keyless OpenAI-compatible kind)."""
    name = tool_id.lower()
    if name in PROVIDERS:
        found.set("provider", name, where)
    elif found.base_url:
        # Keyless (vllm) only when the tool names no key at all: a key whose variable is
        # unset in this shell must never turn into a silent switch of provider.
        keyed = found.api_key or found.missing_key
        found.set("provider", "openai" if keyed else "vllm", f"{where}, by its base URL")
    else:
        found.warnings.append(
            f"{tool_id!r} ({where}) is no provider the gateway knows; pass --provider"
        )


def opencode(home: Path, environ: Mapping[str, str]) -> Found:
    found = Found()
    path = home / ".config" / "opencode" / "opencode.json"
    config = _json_file(path, found)
    model = config.get("model")
    if not isinstance(model, str) or "/" not in model:
        return found
    tool_id, _, name = model.partition("/")
    found.set("model", name, f"model ({path})")
    options = _table(_table(_table(config.get("provider")).get(tool_id)).get("options"))
    found.set("base_url", options.get("baseURL"), f"provider.{tool_id}.options.baseURL")
    api_key = options.get("apiKey")
    if isinstance(api_key, str) and (ref := _ENV_REF.match(api_key.strip())):
        found.set("api_key", environ.get(ref.group(1)), f"{ref.group(1)} (environment)")
    elif isinstance(api_key, str):
        found.set("api_key", api_key, f"provider.{tool_id}.options.apiKey")
    gateway_name = _OPENCODE_PROVIDERS.get(tool_id, tool_id)
    variable = f"{tool_id.upper().replace('-', '_')}_API_KEY"
    found.set("api_key", environ.get(variable), f"{variable} (environment)")
    auth_path = home / ".local" / "share" / "opencode" / "auth.json"
    entry = _table(_json_file(auth_path, found).get(tool_id))
    if entry.get("type") == "api":
        found.set("api_key", entry.get("key"), f"{auth_path}")
    _provider(found, gateway_name, f"model ({path})")
    return found


def defaults_for(client: str, *, home: Path, environ: Mapping[str, str]) -> Found:
    """What `client`'s own configuration says (empty for tools that keep nothing readable)."""
    readers = {"claude-code": claude_code, "codex": codex, "opencode": opencode}
    reader = readers.get(client)
    return reader(home, environ) if reader else Found()
