"""An instance as the API shows it: the declared shape of `GET /api/v1/instances/{id}`.

Built only from a stored record (whose key is already masked) and its usage counters, so no
path through here can carry a plaintext key; the OpenAPI `Instance` schema is generated from it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.instances.fields import INSTANCE_ID_PATTERN

__all__ = ["MASKED_KEY_MAX", "InstanceView", "Usage"]

# `mask_key` shows at most four characters each side of an ellipsis.
MASKED_KEY_MAX = 9
_SHAPE = ConfigDict(strict=True, extra="forbid", frozen=True, hide_input_in_errors=True)


class Usage(BaseModel):
    """What an instance has done since it was registered."""

    model_config = _SHAPE

    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    relay_calls: int = Field(ge=0)
    relay_errors: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    last_used_at: str | None


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
    source: Literal["api", "yaml"]
    read_only: bool = Field(description="Managed in instances.yaml: the API cannot change it.")
    created_at: str
    updated_at: str
    usage: Usage | None = Field(default=None, description="Only when one instance is shown.")

    def data(self) -> dict[str, Any]:
        """Plain JSON data; `usage` only when it was given."""
        return self.model_dump(exclude_unset=True)
