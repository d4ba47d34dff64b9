"""The lookup cache every gateway process on a data dir shares, kept honest without locks.

Keys are `("id", instance_id)` → record tuple or `GONE`, and `("cfg", digest)` → instance id or
`GONE`. Two kinds of callers write here:

- *readers* fill a miss with what they read from SQLite (`fill`). They read the change epoch
  before their SQLite read, and their fill lands only if no change was committed since
  (`fill` compares it in one cache transaction) and the key is not `PENDING`. So a reader that
  holds a row from before a change, however slow it is, can never write it back.
- *writers* (create, update, delete, rotation) mark the keys they are about to change
  `PENDING` before their SQLite commit (`begin`), and after it bump the epoch and store the
  new values (`commit`). While a key is `PENDING` every reader reads SQLite and fills nothing,
  so a writer killed between its commit and `commit` leaves no stale entry behind: the marker
  expires and the next reader fills from the committed row.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import diskcache

from gateway.files import ensure_private_dir

__all__ = ["GONE", "PENDING", "RecordCache"]

GONE = "gone"
PENDING = "pending"
PENDING_TTL = 30.0
_EPOCH = "epoch"

Key = tuple[str, str]


def _k(key: Key) -> str:
    # Plain string keys: diskcache stores them as they are, where a tuple key is pickled on
    # every lookup (measurable on the request path).
    return f"{key[0]}:{key[1]}"


class RecordCache:
    def __init__(self, directory: Path) -> None:
        ensure_private_dir(directory)
        os.close(os.open(directory / "cache.db", os.O_CREAT | os.O_RDWR, 0o600))
        self._cache = diskcache.Cache(str(directory), statistics=False)
        # diskcache keeps one SQLite connection per thread and `close()` closes the calling
        # thread's only; the one opened here (often in a short-lived executor thread) goes now
        # and the next caller reopens its own lazily.
        self._cache.close()

    def close(self) -> None:
        """Close the calling thread's connection (call it from every thread that used us)."""
        self._cache.close()

    def get(self, key: Key) -> Any:
        """The cached value, or None on a miss (a `PENDING` key is a miss that fills nothing)."""
        value = self._cache.get(_k(key))
        return None if value == PENDING else value

    def epoch(self) -> int:
        """Read before a SQLite read whose result will be handed to `fill`."""
        value: int = self._cache.get(_EPOCH, 0)
        return value

    def fill(self, entries: Mapping[Key, Any], epoch: int, *, expire: float) -> bool:
        """Store what a reader read, unless a change was committed since `epoch`.

        Keys marked `PENDING` are left alone; True when every entry was stored.
        """
        stored = 0
        with self._cache.transact(retry=True):
            if self._cache.get(_EPOCH, 0) != epoch:
                return False
            for key, value in entries.items():
                if self._cache.get(_k(key)) != PENDING:
                    self._cache.set(_k(key), value, expire=expire)
                    stored += 1
        return stored == len(entries)

    def begin(self, keys: Iterable[Key]) -> None:
        """Before a commit: these keys are about to change."""
        with self._cache.transact(retry=True):
            for key in keys:
                self._cache.set(_k(key), PENDING, expire=PENDING_TTL)

    def abort(self, keys: Iterable[Key]) -> None:
        """The change was not committed: drop its markers (readers refill from SQLite)."""
        with self._cache.transact(retry=True):
            for key in keys:
                if self._cache.get(_k(key)) == PENDING:
                    self._cache.delete(_k(key))

    def commit(self, entries: Mapping[Key, tuple[Any, float]]) -> None:
        """After a commit: no earlier read may land any more, and these are the new values."""
        with self._cache.transact(retry=True):
            self._cache.incr(_EPOCH)
            for key, (value, expire) in entries.items():
                self._cache.set(_k(key), value, expire=expire)
