"""Request and registration limits: token buckets per instance, per client address, per hour.

powermem's own limit keys on the client IP, and behind the gateway every client has ours, so
the fair place to limit is here: per instance, per client address (powermem's own per-client
setting, applied by the front), and new instances per address (issue 12.1). Buckets live in
this process's memory: with several gateway processes each applies the limit on its own,
unless a Redis URL is given: then the `admit_*` checks count in Redis for every replica
(gateway.policy.shared_limits, issue 13), falling back to these buckets while Redis is down.

IPv6 clients are limited per /64, the block one subscriber usually holds, so cycling through
addresses of one's own block buys nothing.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Protocol

from gateway.errors import InstanceCapReached, RateLimited
from gateway.policy.backoff import address_key

if TYPE_CHECKING:
    from gateway.policy.shared_limits import SharedWindows

__all__ = ["Limiter", "RateLimits", "TokenBuckets"]

MAX_KEYS = 100_000  # per table of buckets; the oldest bucket goes first beyond it


class Limiter(Protocol):
    """`amount` events per `per` seconds per key."""

    amount: int

    def hit(self, key: str) -> float:
        """Take one event for `key`: 0.0 if allowed, else the seconds until one is."""
        ...


class TokenBuckets:
    """An in-memory `Limiter`: a full bucket of `amount` tokens refilled over `per` seconds."""

    def __init__(self, amount: int, per: float, *, max_keys: int = MAX_KEYS) -> None:
        self.amount = amount
        self._rate = amount / per
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last refill)

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str) -> float:
        now = time.monotonic()
        found = self._buckets.get(key)
        if found is None:
            tokens = float(self.amount)
            if len(self._buckets) >= self._max_keys:
                del self._buckets[next(iter(self._buckets))]
        else:
            tokens = min(float(self.amount), found[0] + (now - found[1]) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


def _retry(wait: float) -> int:
    return max(1, math.ceil(wait))


class RateLimits:
    """The gateway's limits; a limit of None or 0 is no limit.

    `check_*` count in this process; `admit_*` (the request path) count across replicas when
    `redis_url` is given, else the same as `check_*`.
    """

    def __init__(
        self,
        *,
        instance_per_minute: int | None = None,
        client_per_minute: int | None = None,
        registrations_per_hour: int | None = None,
        redis_url: str | None = None,
    ) -> None:
        self.instance = TokenBuckets(instance_per_minute, 60.0) if instance_per_minute else None
        self.client = TokenBuckets(client_per_minute, 60.0) if client_per_minute else None
        self.registration = (
            TokenBuckets(registrations_per_hour, 3600.0) if registrations_per_hour else None
        )
        self.shared: SharedWindows | None = None
        if redis_url and self.active:
            from gateway.policy.shared_limits import SharedWindows

            self.shared = SharedWindows(redis_url)

    @property
    def active(self) -> bool:
        return any(t is not None for t in (self.instance, self.client, self.registration))

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    async def _shared_wait(
        self, table: TokenBuckets, namespace: str, per: float, key: str
    ) -> float:
        """The wait `table`'s limit asks for `key`, counted in Redis (locally while it is down)."""
        if self.shared is not None:
            wait = await self.shared.hit(namespace, table.amount, per, key)
            if wait is not None:
                return wait
        return table.hit(key)

    async def admit_client(self, address: str, *, route: str = "") -> None:
        """`check_client`, counted across replicas when Redis is given."""
        if self.client is not None:
            key = f"{address_key(address)} {route}"
            self._refuse_client(await self._shared_wait(self.client, "client", 60.0, key))

    async def admit_instance(self, instance_id: str) -> None:
        """`check_instance`, counted across replicas when Redis is given."""
        if self.instance is not None:
            wait = await self._shared_wait(self.instance, "instance", 60.0, instance_id)
            self._refuse_instance(instance_id, wait)

    async def admit_registration(self, address: str) -> None:
        """`check_registration`, counted across replicas when Redis is given."""
        if self.registration is None or not address:
            return
        wait = await self._shared_wait(
            self.registration, "registration", 3600.0, address_key(address)
        )
        self._refuse_registration(wait)

    def check_instance(self, instance_id: str) -> None:
        """Count one request for an instance, or raise `RateLimited` (with Retry-After)."""
        if self.instance is None:
            return
        self._refuse_instance(instance_id, self.instance.hit(instance_id))

    def _refuse_instance(self, instance_id: str, wait: float) -> None:
        if not wait or self.instance is None:
            return
        retry = _retry(wait)
        raise RateLimited(
            f"Instance {instance_id} is over its limit of {self.instance.amount} requests "
            f"per minute; retry in {retry}s.",
            details={"instance_id": instance_id, "retry_after": retry},
            headers={"Retry-After": str(retry)},
        )

    def check_client(self, address: str, *, route: str = "") -> None:
        """Count one request from a client address (to one route, as powermem counts), or
        raise `RateLimited`."""
        if self.client is None:
            return
        self._refuse_client(self.client.hit(f"{address_key(address)} {route}"))

    def _refuse_client(self, wait: float) -> None:
        if not wait or self.client is None:
            return
        retry = _retry(wait)
        raise RateLimited(
            f"Too many requests from this address (limit {self.client.amount} per minute); "
            f"retry in {retry}s.",
            details={"retry_after": retry, "scope": "client"},
            headers={"Retry-After": str(retry)},
        )

    def check_registration(self, address: str) -> None:
        """Count one new instance for a client address, or raise `InstanceCapReached`.

        An empty address (an in-process caller such as the CLI) has no per-address cap; the
        total cap on instances still holds for it.
        """
        if self.registration is None or not address:
            return
        self._refuse_registration(self.registration.hit(address_key(address)))

    def _refuse_registration(self, wait: float) -> None:
        if not wait or self.registration is None:
            return
        retry = _retry(wait)
        raise InstanceCapReached(
            f"This address registered {self.registration.amount} new instances within the "
            f"hour, the limit; retry in {retry}s, or register with the admin token "
            "(POWERMEM_GATEWAY_NEW_INSTANCES_PER_CLIENT_PER_HOUR raises the limit).",
            details={"retry_after": retry, "scope": "client", "limit": self.registration.amount},
            headers={"Retry-After": str(retry)},
        )
