"""What an instance is: its configuration, its canonical form, its id and its masked view."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import InvalidConfig
from gateway.providers import PROVIDERS, provider_names

__all__ = [
    "INSTANCE_ID_RE",
    "InstanceConfig",
    "InstanceRecord",
    "candidate_id",
    "config_digest",
    "mask_key",
]

# Derived ids are `pmem-` + 16 hex; ids written by hand in instances.yaml may be any short slug.
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_MODEL_LEN = 256
MAX_KEY_LEN = 4096
MAX_URL_LEN = 2048


def _check_base_url(base_url: str) -> str:
    base_url = base_url.strip()
    if not base_url:
        return ""
    if len(base_url) > MAX_URL_LEN:
        raise InvalidConfig(f"base_url is longer than {MAX_URL_LEN} characters.")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfig(
            "base_url must be an http:// or https:// URL with a host, "
            "e.g. https://api.example.com/v1.",
            details={"field": "base_url"},
        )
    if parts.username or parts.password:
        raise InvalidConfig(
            "base_url must not carry credentials; send the key as api_key.",
            details={"field": "base_url"},
        )
    if parts.fragment:
        raise InvalidConfig("base_url must not have a #fragment.", details={"field": "base_url"})
    if parts.query:
        # The relay appends /chat/completions (or /v1/messages) to the base URL, so a query
        # could never work; and `?key=…` would put a credential where keys are not protected.
        raise InvalidConfig(
            "base_url must not have a ?query; send the key as api_key.",
            details={"field": "base_url"},
        )
    # One canonical spelling, so `…/v1` and `…/v1/` are the same configuration.
    return base_url.rstrip("/")


@dataclass(frozen=True)
class InstanceConfig:
    """The part of an instance a client chooses. `api_key` is plaintext: handle with care."""

    provider: str
    model: str
    api_key: str = field(repr=False)
    base_url: str = ""
    client: str = ""

    @classmethod
    def parse(
        cls,
        *,
        provider: object,
        model: object,
        api_key: object = "",
        base_url: object = "",
        client: object = "",
    ) -> InstanceConfig:
        """Validate and normalise; raises `InvalidConfig` with a message naming the field."""
        values = {
            "provider": provider,
            "model": model,
            "api_key": api_key,
            "base_url": base_url,
            "client": client,
        }
        for name, value in values.items():
            if value is None:
                values[name] = ""
            elif not isinstance(value, str):
                raise InvalidConfig(f"{name} must be a string.", details={"field": name})
        prov = str(values["provider"]).strip().lower()
        if not prov:
            raise InvalidConfig("provider is required.", details={"field": "provider"})
        if prov not in PROVIDERS:
            raise InvalidConfig(
                f"unknown provider {prov[:40]!r}; use one of: {', '.join(provider_names())}.",
                details={"field": "provider", "allowed": provider_names()},
            )
        spec = PROVIDERS[prov]
        mdl = str(values["model"]).strip()
        if not mdl:
            raise InvalidConfig("model is required.", details={"field": "model"})
        if len(mdl) > MAX_MODEL_LEN or not mdl.isprintable():
            raise InvalidConfig(
                f"model must be printable and at most {MAX_MODEL_LEN} characters.",
                details={"field": "model"},
            )
        key = str(values["api_key"]).strip()
        if not key and not spec.keyless:
            raise InvalidConfig(
                f"api_key is required for provider {prov!r} "
                "(only keyless local providers such as ollama and vllm may omit it).",
                details={"field": "api_key"},
            )
        if len(key) > MAX_KEY_LEN or not key.isprintable():
            raise InvalidConfig(
                f"api_key must be printable and at most {MAX_KEY_LEN} characters.",
                details={"field": "api_key"},
            )
        url = _check_base_url(str(values["base_url"]))
        if not url and not spec.default_base_url:
            raise InvalidConfig(
                f"base_url is required for provider {prov!r} (it has no public endpoint).",
                details={"field": "base_url"},
            )
        label = str(values["client"]).strip()
        if label and not _CLIENT_RE.match(label):
            raise InvalidConfig(
                "client must be a short label of letters, digits, '.', '_' or '-' "
                "(at most 64), e.g. claude-code.",
                details={"field": "client"},
            )
        return cls(provider=prov, model=mdl, api_key=key, base_url=url, client=label)

    def canonical(self) -> bytes:
        """The one byte string every equal configuration maps to."""
        return json.dumps(
            [self.provider, self.model, self.api_key, self.base_url, self.client],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    def public(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "provider": self.provider,
            "model": self.model,
            "api_key": mask_key(self.api_key),
            "base_url": self.base_url,
        }


def config_digest(id_key: bytes, config: InstanceConfig) -> str:
    """Keyed fingerprint of a configuration: reveals nothing about the key without `id_key`."""
    return hmac.digest(id_key, config.canonical(), "sha256").hex()


def candidate_id(digest: str, attempt: int = 0) -> str:
    """The id a configuration gets; later attempts only when an earlier id is taken.

    An id is taken by another configuration only after an update moved that instance's
    configuration away from the one its id was derived from, so attempt 0 is the rule.
    """
    if attempt == 0:
        return f"pmem-{digest[:16]}"
    alt = hashlib.sha256(f"{digest}:{attempt}".encode()).hexdigest()
    return f"pmem-{alt[:16]}"


def mask_key(key: str) -> str:
    """`sk-abcdef…wxyz` → `sk-a…wxyz`; short keys show (almost) nothing."""
    if not key:
        return ""
    if len(key) <= 8:
        return "…"
    if len(key) < 16:
        return f"{key[:2]}…{key[-2:]}"
    return f"{key[:4]}…{key[-4:]}"


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """A stored instance. The key stays encrypted here; `Registry.api_key()` opens it.

    `source` says where it came from: `api` (registered), `implicit` (created by a proxied
    request's LLM headers; expires when unused) or `yaml` (instances.yaml, read-only).
    """

    instance_id: str
    client: str
    provider: str
    model: str
    base_url: str
    encrypted_key: str = field(repr=False)
    masked_key: str
    config_digest: str
    created_at: str
    updated_at: str
    source: Literal["api", "implicit", "yaml"] = "api"
    # SHA-256 of the instance secret (issue 9.5); '' when it has none.
    secret_hash: str = field(default="", repr=False)

    def public(self, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "instance_id": self.instance_id,
            "client": self.client,
            "provider": self.provider,
            "model": self.model,
            "api_key": self.masked_key,
            "base_url": self.base_url,
            "source": self.source,
            "read_only": self.source == "yaml",
            "has_secret": bool(self.secret_hash),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if usage is not None:
            data["usage"] = usage
        return data
