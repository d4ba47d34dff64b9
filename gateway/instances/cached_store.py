"""The store of record as this process sees it: through its cache, on one worker thread.

Reads that miss the cache hold the change file's shared lock while they read the store;
writes hold its exclusive lock and announce before they commit (gateway.instances.changes;
on PostgreSQL the change feed, gateway.instances.pg_feed, plays the same part).
Both hand back the counter they ran at, and what they read or wrote lands in the cache only
if nothing changed since (gateway.instances.cache). The store itself is blocking and is only
ever called from the one worker thread, so it needs no locking of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar, cast

from gateway.instances.cache import ABSENT, MISS, RecordCache
from gateway.instances.model import InstanceRecord
from gateway.instances.store import Changes, Row, Store

__all__ = ["CachedStore", "to_record"]

T = TypeVar("T")


def to_record(row: Row) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row.instance_id,
        client=row.client,
        provider=row.provider,
        model=row.model,
        base_url=row.base_url,
        encrypted_key=row.api_key,
        masked_key=row.masked_key,
        config_digest=row.config_digest,
        created_at=row.created_at,
        updated_at=row.updated_at,
        source="implicit" if row.source == "implicit" else "api",
        secret_hash=row.secret_hash,
    )


class CachedStore:
    def __init__(self, store: Store, changes: Changes) -> None:
        self.store = store
        self.changes = changes
        self.cache = RecordCache(changes)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="registry")

    async def close(self) -> None:
        await self.run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        self.store.close()
        self.changes.close()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` on the worker thread, with no lock (usage, listing, key rotation)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def _read(self, fn: Callable[..., T], *args: Any) -> tuple[T, int | None]:
        with self.changes.shared() as at:
            return fn(*args), at

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int | None]:
        with self.changes.exclusive():
            result = fn(*args, announce=self.changes, **kwargs)
        return result, self.changes.written_at

    async def read(self, fn: Callable[..., T], *args: Any) -> tuple[T, int | None]:
        return await self.run(self._read, fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, int | None]:
        """`fn(*args, announce=…, **kwargs)` as the one writer on the data dir."""
        return await self.run(self._write, fn, *args, **kwargs)

    def remember(
        self,
        at: int | None,
        rows: Iterable[Row] = (),
        *,
        gone_ids: Iterable[str] = (),
        gone_digests: Iterable[str] = (),
    ) -> list[InstanceRecord]:
        """Cache what a read or write at counter `at` found; returns the rows as records."""
        records = [to_record(r) for r in rows]
        by_id: dict[str, Any] = {r.instance_id: r for r in records}
        by_digest: dict[str, Any] = {r.config_digest: r.instance_id for r in records}
        by_id.update(dict.fromkeys(gone_ids, ABSENT))
        for digest in gone_digests:
            by_digest.setdefault(digest, ABSENT)
        self.cache.fill(at, by_id, by_digest)
        return records

    # -- lookups ------------------------------------------------------------------------------

    async def record(self, instance_id: str) -> InstanceRecord | None:
        """The stored instance with this id, or None."""
        cached = self.cache.record(instance_id)
        if cached is ABSENT:
            return None
        if cached is not MISS:
            return cast(InstanceRecord, cached)
        row, at = await self.read(self.store.get, instance_id)
        if row is None:
            self.remember(at, gone_ids=[instance_id])
            return None
        return self.remember(at, [row])[0]

    async def by_digest(self, digest: str) -> InstanceRecord | None:
        """The stored instance with this configuration digest, or None."""
        cached = self.cache.by_digest(digest)
        if cached is ABSENT:
            return None
        if cached is not MISS:
            return cast(InstanceRecord, cached)
        row, at = await self.read(self.store.by_digest, digest)
        if row is None:
            self.remember(at, gone_digests=[digest])
            return None
        return self.remember(at, [row])[0]
