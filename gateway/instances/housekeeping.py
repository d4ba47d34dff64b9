"""What the registry does in the background: keep the change file healthy, expire idle ones.

Implicit instances (made by a proxied request's LLM headers) that nobody used for
`implicit_instance_ttl` seconds are deleted, with an audit entry each (issue 12.1): the next
request with the same headers makes the same instance again, under the same id. Explicit
and instances.yaml instances never expire.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from gateway.instances.cached_store import CachedStore
from gateway.observe.audit import AuditLog

__all__ = ["BATCH", "EXPIRE_EVERY", "Expiry", "expire_idle", "tick"]

EXPIRE_EVERY = 600.0  # seconds between two sweeps for idle implicit instances
BATCH = 500  # instances deleted per transaction


class Expiry:
    def __init__(self, ttl: float | None) -> None:
        self.ttl = ttl if ttl and ttl > 0 else None
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        if self.ttl is None or now < self._next:
            return False
        self._next = now + EXPIRE_EVERY
        return True


async def expire_idle(data: CachedStore, audit: AuditLog, ttl: float | None) -> int:
    """Delete the implicit instances unused for `ttl` seconds; how many were deleted."""
    if not ttl or ttl <= 0:
        return 0
    cutoff = (datetime.now(UTC) - timedelta(seconds=ttl)).isoformat(timespec="milliseconds")
    cutoff = cutoff.replace("+00:00", "Z")
    done = 0
    while True:
        rows, at = await data.write(
            data.store.expire, source="implicit", unused_before=cutoff, limit=BATCH
        )
        data.remember(
            at,
            gone_ids=[r.instance_id for r in rows],
            gone_digests=[r.config_digest for r in rows],
        )
        for row in rows:
            audit.record(
                "expire", instance_id=row.instance_id, client=row.client, source="housekeeping"
            )
        done += len(rows)
        if len(rows) < BATCH:
            return done


async def tick(data: CachedStore, audit: AuditLog, expiry: Expiry) -> None:
    # A deleted or damaged change file is replaced here too, not only on the next miss.
    await data.run(data.changes.check)
    if expiry.due():
        await expire_idle(data, audit, expiry.ttl)
