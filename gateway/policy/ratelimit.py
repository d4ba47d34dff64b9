"""Per-instance request limits (token bucket), kept in this process's memory.

powermem's own limit keys on the client IP, and behind the gateway every client has ours, so
the fair place to limit is here, per instance. With several gateway processes the limit
applies to each of them.
"""

from __future__ import annotations

import math
import time

from gateway.errors import RateLimited

__all__ = ["InstanceRateLimiter"]


class InstanceRateLimiter:
    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # id → (tokens, last refill)

    def check(self, instance_id: str) -> None:
        """Take one request from the instance's bucket, or raise `RateLimited`."""
        now = time.monotonic()
        tokens, last = self._buckets.get(instance_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / self._rate)
            self._buckets[instance_id] = (tokens, now)
            raise RateLimited(
                f"Instance {instance_id} is over its limit of {int(self._capacity)} requests "
                f"per minute; retry in {wait}s.",
                details={"instance_id": instance_id, "retry_after": wait},
                headers={"Retry-After": str(wait)},
            )
        self._buckets[instance_id] = (tokens - 1.0, now)
