"""This process's cache of records by id and ids by config digest, kept honest by `Changes`.

A hit is one counter read (see gateway.instances.changes) and one dict lookup. Entries may
say "absent" too, so a flood of unknown ids or unregistered configurations does not turn into
a flood of database reads. Only the event loop thread touches the dicts; fills come back from
the registry's worker thread with the counter they were read at, and land only if the counter
has not moved since.

Bounded: at most `CAPACITY` records and `CAPACITY` digests; the oldest entries go first.
"""

from __future__ import annotations

from typing import Final

from gateway.instances.model import InstanceRecord
from gateway.instances.store import Changes

__all__ = ["ABSENT", "CAPACITY", "MISS", "RecordCache"]

CAPACITY = 20_000  # per table; about 17 MiB of records at most (twice the default cap)


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MISS: Final = _Marker("MISS")  # not cached: ask the store
ABSENT: Final = _Marker("ABSENT")  # cached as "no such instance / configuration"

Cached = InstanceRecord | _Marker


class RecordCache:
    def __init__(self, changes: Changes, capacity: int = CAPACITY) -> None:
        self._changes = changes
        self._capacity = capacity
        self._records: dict[str, InstanceRecord | _Marker] = {}
        self._digests: dict[str, str | _Marker] = {}
        self._seen = changes.read()

    def __len__(self) -> int:
        return len(self._records) + len(self._digests)

    def sync(self) -> int | None:
        """Drop what changed since the last look; the counter now (None: do not cache)."""
        now = self._changes.read()
        if now != self._seen:
            keys = None
            if now is not None and self._seen is not None:
                keys = self._changes.since(self._seen, now)
            if keys is None:
                self._records.clear()
                self._digests.clear()
            else:
                for key in keys:
                    if key[:2] == "i:":
                        self._records.pop(key[2:], None)
                    else:
                        self._digests.pop(key[2:], None)
            self._seen = now
        return now

    def record(self, instance_id: str) -> Cached:
        """The cached record, `ABSENT`, or `MISS`."""
        if self.sync() is None:
            return MISS
        return self._records.get(instance_id, MISS)

    def by_digest(self, digest: str) -> Cached:
        """The record cached for a configuration digest, `ABSENT`, or `MISS` (one sync)."""
        if self.sync() is None:
            return MISS
        found = self._digests.get(digest, MISS)
        if not isinstance(found, str):
            return found
        record = self._records.get(found, MISS)
        if isinstance(record, InstanceRecord) and record.config_digest == digest:
            return record
        return MISS

    def fill(
        self,
        at: int | None,
        records: dict[str, InstanceRecord | _Marker] | None = None,
        digests: dict[str, str | _Marker] | None = None,
    ) -> bool:
        """Store what was read at counter `at`, unless anything changed since; True if stored."""
        if at is None or self.sync() != at:
            return False
        for table, entries in ((self._records, records), (self._digests, digests)):
            if not entries:
                continue
            for key, value in entries.items():
                table.pop(key, None)
                table[key] = value  # type: ignore[assignment]
            while len(table) > self._capacity:
                del table[next(iter(table))]
        return True

    def clear(self) -> None:
        self._records.clear()
        self._digests.clear()
