"""An instance as the API shows it: the declared shape of `GET /api/v1/instances/{id}`.

Built only from a stored record (whose key is already masked) and its usage counters, so no
path through here can carry a plaintext key; the OpenAPI `Instance` schema is generated from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.instances.fields import INSTANCE_ID_PATTERN

__all__ = ["MASKED_KEY_MAX", "HourOfUse", "InstanceView", "LlmError", "Usage"]

# `mask_key` shows at most four characters each side of an ellipsis.
MASKED_KEY_MAX = 9
_SHAPE = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)


class LlmError(BaseModel):
    """The last LLM call of this instance that failed: the provider's status, and why."""

    model_config = _SHAPE

    status: int
    reason: str
    at: str


class HourOfUse(BaseModel):
    model_config = _SHAPE

    hour: str = Field(description="The hour's start, UTC.")
    llm_calls: int = Field(ge=0)
    llm_errors: int = Field(ge=0)


class Usage(BaseModel):
    """What an instance has done since it was registered."""

    model_config = _SHAPE

    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    relay_calls: int = Field(ge=0)
    relay_errors: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    llm_errors: int = Field(ge=0)
    last_used_at: str | None
    last_llm_error: LlmError | None
    last_24h: list[HourOfUse] = Field(description="LLM calls and errors per hour, oldest first.")


class InstanceView(BaseModel):
    """One instance, its key masked."""

    model_config = _SHAPE

    instance_id: str = Field(pattern=INSTANCE_ID_PATTERN)
    client: str
    provider: str
    model: str
    api_key: str = Field(
        max_length=MASKED_KEY_MAX, description="Masked: at most the first and last four characters."
    )
    base_url: str
    source: Literal["api", "implicit", "yaml"] = Field(
        description="Registered, created by a request's LLM headers, or from instances.yaml."
    )
    read_only: bool = Field(description="Managed in instances.yaml: the API cannot change it.")
    has_secret: bool = Field(description="Requests must present the instance secret too.")
    created_at: str
    updated_at: str
    usage: Usage | None = Field(default=None, description="Only when one instance is shown.")

    def data(self) -> dict[str, Any]:
        """Plain JSON data; `usage` only when it was given."""
        return self.model_dump(exclude_unset=True)
