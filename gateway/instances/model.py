"""What an instance is: its configuration, its canonical form, its id and its masked view.

`InstanceConfig` is the one declaration of a configuration: the management API validates
registration bodies with it (strict: strings only, no unknown fields), the OpenAPI document's
`InstanceInput` schema is generated from it, and `InstanceConfig.parse` is the lenient entry
for headers, instances.yaml and the CLI (blanks trimmed, provider in any case).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from gateway.errors import InvalidConfig
from gateway.instances.fields import (
    CONFIG_FIELDS,
    CONFIG_HINTS,
    INSTANCE_ID_RE,
    ApiKey,
    BaseUrl,
    ClientLabel,
    ModelName,
    ProviderName,
)
from gateway.instances.view import InstanceView, Usage
from gateway.providers import PROVIDERS
from gateway.validation import Hint, bad_request

__all__ = [
    "INSTANCE_ID_RE",
    "InstanceConfig",
    "InstanceRecord",
    "candidate_id",
    "config_digest",
    "mask_key",
]


def _cross_field_schema(schema: dict[str, Any]) -> None:
    """What `_requirements` enforces, in JSON Schema: which providers need a key or a URL."""
    keyed = sorted(n for n, spec in PROVIDERS.items() if not spec.keyless)
    no_default = sorted(n for n, spec in PROVIDERS.items() if not spec.default_base_url)
    schema["allOf"] = [
        {
            "if": {"properties": {"provider": {"enum": keyed}}},
            "then": {"required": ["api_key"], "properties": {"api_key": {"minLength": 1}}},
        },
        {
            "if": {"properties": {"provider": {"enum": no_default}}},
            "then": {"required": ["base_url"], "properties": {"base_url": {"minLength": 1}}},
        },
    ]


class InstanceConfig(BaseModel):
    """The part of an instance a client chooses. `api_key` is plaintext: handle with care."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_extra=_cross_field_schema,
    )
    HINTS: ClassVar[dict[str, Hint]] = CONFIG_HINTS

    provider: ProviderName
    model: ModelName
    api_key: ApiKey = ""
    base_url: BaseUrl = ""
    client: ClientLabel = ""

    @model_validator(mode="after")
    def _requirements(self) -> InstanceConfig:
        spec = PROVIDERS[self.provider]
        if not self.api_key and not spec.keyless:
            raise PydanticCustomError(
                "api_key_required",
                "api_key is required for provider {provider} (only keyless local providers "
                "such as ollama and vllm may omit it).",
                {"field": "api_key", "provider": self.provider},
            )
        if not self.base_url and not spec.default_base_url:
            raise PydanticCustomError(
                "base_url_required",
                "base_url is required for provider {provider} (it has no public endpoint).",
                {"field": "base_url", "provider": self.provider},
            )
        return self

    @classmethod
    def validate_body(cls, raw: bytes | str) -> InstanceConfig:
        """A registration body (JSON text) as a configuration; `InvalidConfig`/`InvalidBody`."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise bad_request(exc, InvalidConfig, allowed=CONFIG_FIELDS, hints=cls.HINTS) from None

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
        """Validate and normalise; raises `InvalidConfig` with a message naming the field.

        Lenient where people type by hand (headers, instances.yaml, the CLI): surrounding
        blanks are trimmed, the provider may be in any case, None means empty.
        """
        values: dict[str, object] = {}
        for name, value in (
            ("provider", provider),
            ("model", model),
            ("api_key", api_key),
            ("base_url", base_url),
            ("client", client),
        ):
            values[name] = (
                "" if value is None else value.strip() if isinstance(value, str) else value
            )
        if isinstance(values["provider"], str):
            values["provider"] = values["provider"].lower()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise bad_request(exc, InvalidConfig, allowed=CONFIG_FIELDS, hints=cls.HINTS) from None

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

    def view(self, usage: dict[str, Any] | None = None) -> InstanceView:
        """The instance as the API shows it: key masked, usage counters when given."""
        fields: dict[str, Any] = {}
        if usage is not None:
            fields["usage"] = Usage(**usage)
        return InstanceView(
            instance_id=self.instance_id,
            client=self.client,
            provider=self.provider,
            model=self.model,
            api_key=self.masked_key,
            base_url=self.base_url,
            source=self.source,
            read_only=self.source == "yaml",
            has_secret=bool(self.secret_hash),
            created_at=self.created_at,
            updated_at=self.updated_at,
            **fields,
        )

    def public(self, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        """`view()` as plain JSON data (the CLI prints it)."""
        return self.view(usage).data()
