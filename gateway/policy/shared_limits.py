"""Rate limits that hold across every replica: sliding windows kept in Redis by `limits`.

With `--redis-url` the per-instance, per-client and registration limits count every replica's
requests in one place, so a client cannot multiply its allowance by the number of replicas
behind a load balancer. The `limits` library does the counting (a sliding-window counter:
two integers per key and window, updated atomically by its own Lua scripts), driven through
redis-py's asyncio client, so a check is one round trip and never blocks the event loop.

Redis unreachable: each check falls back to this process's own token buckets (limits per
process, as without Redis) and says so once, rather than turn a cache outage into refusing
every request.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis.asyncio
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError as LimitsStorageError

__all__ = ["SharedWindows"]

log = logging.getLogger("gateway.ratelimit")

PREFIX = "powermem-gateway"


class SharedWindows:
    """`amount` events per `per` seconds per key, counted in Redis for every replica."""

    def __init__(self, url: str) -> None:
        # Our own pool, so the connections are closed with the app (`close`).
        self._pool = redis.asyncio.ConnectionPool.from_url(
            url, socket_connect_timeout=2, socket_timeout=2
        )
        # (`limits` passes it on to redis-py; its annotations only know scalar options.)
        pool: dict[str, Any] = {"connection_pool": self._pool}
        self._storage = RedisStorage(
            "async+" + url,
            implementation="redispy",
            key_prefix=PREFIX,
            wrap_exceptions=True,
            **pool,
        )
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._items: dict[tuple[int, float], RateLimitItemPerSecond] = {}
        self._warned = False

    def _item(self, amount: int, per: float) -> RateLimitItemPerSecond:
        key = (amount, per)
        if (item := self._items.get(key)) is None:
            item = self._items[key] = RateLimitItemPerSecond(amount, math.ceil(per))
        return item

    async def hit(self, namespace: str, amount: int, per: float, key: str) -> float | None:
        """0.0 if allowed, else the seconds until it is; None when Redis cannot be asked."""
        item = self._item(amount, per)
        try:
            if await self._limiter.hit(item, namespace, key):
                self._recovered()
                return 0.0
            stats = await self._limiter.get_window_stats(item, namespace, key)
        except (LimitsStorageError, OSError) as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "rate limits cannot reach Redis (%s); each process limits on its own "
                    "until it is back",
                    type(exc).__name__,
                )
            return None
        self._recovered()
        return max(1.0, stats.reset_time - time.time())

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            log.warning("rate limits reach Redis again; they hold across replicas again")

    async def close(self) -> None:
        await self._pool.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._storage.check())
        except (LimitsStorageError, OSError):
            return False
