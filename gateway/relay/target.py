"""Where one relayed call goes: provider, model, key and URL, resolved per call."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.instances.model import InstanceConfig, InstanceRecord
from gateway.providers import PROVIDERS, ProviderSpec

__all__ = ["Target"]


@dataclass(frozen=True)
class Target:
    spec: ProviderSpec
    model: str
    api_key: str = field(repr=False)
    base_url: str
    # None for the default LLM of the global .env.
    instance_id: str | None = None
    client: str = ""
    # True when a client chose the base URL (API-registered instances): the base-URL policy
    # applies. The default LLM (.env) and instances.yaml are the operator's own choices.
    client_url: bool = False

    @classmethod
    def of(cls, record: InstanceRecord | InstanceConfig, api_key: str) -> Target:
        spec = PROVIDERS[record.provider]
        return cls(
            spec=spec,
            model=record.model,
            api_key=api_key,
            base_url=(record.base_url or spec.default_base_url).rstrip("/"),
            instance_id=getattr(record, "instance_id", None),
            client=record.client,
            client_url=isinstance(record, InstanceRecord) and record.source == "api",
        )

    @property
    def url(self) -> str:
        if self.spec.wire == "anthropic":
            # Like Anthropic's SDK, the base URL stops before /v1; accept it with /v1 too.
            base = self.base_url.removesuffix("/v1")
            return f"{base}/v1/messages"
        return f"{self.base_url}/chat/completions"

    def auth_headers(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        if self.spec.auth == "x-api-key":
            return {"x-api-key": self.api_key, "anthropic-version": "2023-06-01"}
        if self.spec.auth == "api-key":
            return {"api-key": self.api_key}
        return {"Authorization": f"Bearer {self.api_key}"}
