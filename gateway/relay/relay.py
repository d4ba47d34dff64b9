"""The relay's state: its token, its provider pool, and how a call finds its target."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError, InvalidHeader
from gateway.instances.crypto import SecretError
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.store import now_iso
from gateway.observe.logs import remember_secret
from gateway.relay.client import ProviderPool
from gateway.relay.target import Target

__all__ = ["NoDefaultLLM", "Relay", "RelayStats"]


class NoDefaultLLM(GatewayError):
    """A call without an instance arrived, and the global .env names no LLM."""

    status = 503
    code = "NO_DEFAULT_LLM"


@dataclass
class RelayStats:
    """What the relay has seen since start: proof (or not) that powermem is wired to it."""

    calls: int = 0
    # Calls that carried the nonce of a request the gateway forwarded: proof of the wiring.
    proxied_calls: int = 0
    instance_calls: int = 0
    # Calls refused for arriving without the gateway's baggage (broken instrumentation).
    unproxied: int = 0
    last_call_at: str | None = None
    last_instance_call_at: str | None = None

    def seen(self, instance_id: str | None, *, proxied: bool) -> None:
        self.calls += 1
        self.proxied_calls += int(proxied)
        self.last_call_at = now_iso()
        if instance_id is not None:
            self.instance_calls += 1
            self.last_instance_call_at = self.last_call_at


class Relay:
    def __init__(
        self,
        *,
        token: str,
        registry: Registry,
        pool: ProviderPool,
        default: InstanceConfig | None,
    ) -> None:
        self.token = token
        remember_secret(token)
        if default is not None:
            remember_secret(default.api_key)
        self.pool = pool
        self.stats = RelayStats()
        self._registry = registry
        self._default = Target.of(default, default.api_key) if default else None

    @property
    def default_llm(self) -> dict[str, str] | None:
        """The default LLM's provider and model (never its key), for status reports."""
        if self._default is None:
            return None
        return {"provider": self._default.spec.name, "model": self._default.model}

    async def target(self, instance_id: str | None) -> Target:
        """The instance's provider, or the default LLM when the call names no instance."""
        if instance_id is None:
            if self._default is None:
                raise NoDefaultLLM(
                    "No default LLM: this call carries no powermem.instance baggage and the "
                    "global .env sets no LLM_PROVIDER/LLM_MODEL/LLM_API_KEY."
                )
            return self._default
        if not INSTANCE_ID_RE.match(instance_id):
            raise InvalidHeader("baggage member powermem.instance is not a valid instance id.")
        record = await self._registry.get(instance_id)
        try:
            api_key = self._registry.api_key(record)
        except SecretError as exc:
            raise GatewayError(f"Instance {instance_id}: {exc}") from None
        # From here on the key is in flight: whatever a library logs about the call is masked.
        remember_secret(api_key)
        return Target.of(record, api_key)
