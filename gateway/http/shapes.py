"""The shapes the gateway's own API receives and answers, declared once.

Request bodies are strict (strings are strings, unknown fields refused) and hide their input
from error text; answers are built through these models, so a response cannot drift from the
OpenAPI document, whose schemas are generated from here (`gateway.http.openapi`). The
registration body is `InstanceConfig` itself; the instance view is `InstanceView`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from gateway.errors import InvalidBody, InvalidConfig
from gateway.instances.fields import (
    CONFIG_FIELDS,
    CONFIG_HINTS,
    INSTANCE_ID_PATTERN,
    ApiKey,
    BaseUrl,
    ClientLabel,
    ModelName,
    ProviderName,
)
from gateway.instances.paging import MAX_LIMIT
from gateway.instances.view import InstanceView
from gateway.validation import bad_request

__all__ = [
    "INSTANCE_UPDATE",
    "Deleted",
    "Envelope",
    "ErrorBody",
    "ErrorEnvelope",
    "Health",
    "InstancePage",
    "InstanceUpdate",
    "ListQuery",
    "OpenAIError",
    "OpenAIErrorBody",
    "ProbeResult",
    "ProviderProbe",
    "Ready",
    "Registration",
    "SecretRevoked",
    "SecretRotated",
    "Status",
    "parse_update",
]

_IN = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)
_OUT = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
DataT = TypeVar("DataT")
DEFAULT_PAGE = 100
Timestamp = Field(
    json_schema_extra={"format": "date-time"}, description="UTC, ISO-8601, milliseconds, Z."
)


class InstanceUpdate(TypedDict, total=False):
    """`PUT /api/v1/instances/{id}`: any of the fields, at least one. The stored configuration
    with the changes applied must still be a valid InstanceConfig (azure needs a base_url, a
    keyed provider a key), and a change of `provider` or `base_url` needs `api_key` in the
    same request: a stored key only ever goes where it was registered."""

    __pydantic_config__ = _IN | ConfigDict(json_schema_extra={"minProperties": 1})  # type: ignore[misc]

    client: ClientLabel
    provider: ProviderName
    model: ModelName
    api_key: ApiKey
    base_url: BaseUrl


INSTANCE_UPDATE: TypeAdapter[InstanceUpdate] = TypeAdapter(InstanceUpdate)


def parse_update(raw: str) -> dict[str, str]:
    """The fields an update body sets; `InvalidConfig`/`InvalidBody` when it is not one."""
    try:
        changes = INSTANCE_UPDATE.validate_json(raw)
    except ValidationError as exc:
        raise bad_request(exc, InvalidConfig, allowed=CONFIG_FIELDS, hints=CONFIG_HINTS) from None
    if not changes:
        raise InvalidBody(f"Nothing to update: send any of {', '.join(CONFIG_FIELDS)}.")
    return cast(dict[str, str], changes)


class Registration(BaseModel):
    """`POST /api/v1/instances`: the id, whether it was just created, and the instance."""

    model_config = _OUT

    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN)
    created: bool
    instance: InstanceView
    secret: str | None = Field(
        default=None,
        description="Shared gateways only, and only in the answer that created the instance: "
        "send it with the id (X-PowerMem-Instance-Secret, or /i/<id>~<secret>). Shown once.",
    )


class ListQuery(BaseModel):
    """The query of `GET /api/v1/instances`: a page size, where to go on, and filters."""

    # Query values are text, so `limit=10` is read as a number; anything unknown is refused
    # (a misspelt `?limt=` must not quietly list everything).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, max_length=512, description="`next_cursor` of the previous page."
    )
    client: ClientLabel | None = Field(default=None, description="Only this client label.")
    provider: ProviderName | None = Field(default=None, description="Only this provider.")

    @classmethod
    def of(cls, query: Mapping[str, str]) -> ListQuery:
        if len(query) != len(set(query)):
            raise InvalidConfig("Give each query parameter once.")
        try:
            return cls.model_validate(dict(query))
        except ValidationError as exc:
            raise bad_request(exc, InvalidConfig, allowed=tuple(cls.model_fields)) from None


class InstancePage(BaseModel):
    """`GET /api/v1/instances`: one page, in a stable order (instances.yaml first)."""

    model_config = _OUT

    instances: list[InstanceView]
    total: int = Field(ge=0, description="How many instances match, on every page together.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class Deleted(BaseModel):
    model_config = _OUT

    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN)
    deleted: Literal[True]


class SecretRotated(BaseModel):
    """`POST /api/v1/instances/{id}/secret`: the new secret, shown this once."""

    model_config = _OUT

    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN)
    secret: str


class SecretRevoked(BaseModel):
    """`DELETE /api/v1/instances/{id}/secret`: the id alone binds no request any more."""

    model_config = _OUT

    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN)
    revoked: Literal[True]


class Health(BaseModel):
    model_config = _OUT

    status: Literal["ok"]
    version: str


class Status(BaseModel):
    """`GET /gateway/status`. Without the admin token only `version` and `healthy`."""

    model_config = _OUT

    version: str
    healthy: bool = Field(description="The gateway answers and powermem's health says 200.")
    upstream: dict[str, Any] | None = Field(default=None, description="Admin token only.")
    relay: dict[str, Any] | None = Field(default=None, description="Admin token only.")
    instances: int | None = Field(default=None, ge=0, description="Admin token only.")
    instances_file_problems: list[str] | None = Field(
        default=None, description="What is wrong with instances.yaml, if anything (admin only)."
    )


class Ready(BaseModel):
    """`GET /gateway/ready`: a memory call through to powermem works (503 until it does)."""

    model_config = _OUT

    ready: Literal[True]
    upstream: Literal["external", "managed"]


class ProviderProbe(BaseModel):
    """`POST /gateway/probe/{id}`: what the instance's provider said to a one-token call."""

    model_config = _OUT

    ok: bool
    status: int
    detail: str


class ProbeResult(BaseModel):
    model_config = _OUT

    wired: bool
    detail: str
    upstream_status: int | None


class Envelope(BaseModel, Generic[DataT]):
    """powermem's success envelope."""

    model_config = _OUT

    success: Literal[True]
    data: DataT
    message: str
    timestamp: str = Timestamp


class ErrorBody(BaseModel):
    model_config = _OUT

    code: str = Field(description="powermem's code where the meaning is the same.")
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    """powermem's error envelope."""

    model_config = _OUT

    success: Literal[False]
    error: ErrorBody
    timestamp: str = Timestamp


class OpenAIErrorBody(BaseModel):
    model_config = _OUT

    message: str
    type: str
    code: str | None
    param: str | None


class OpenAIError(BaseModel):
    """Errors on the relay, in OpenAI's shape (what powermem's OpenAI client understands)."""

    model_config = _OUT

    error: OpenAIErrorBody
