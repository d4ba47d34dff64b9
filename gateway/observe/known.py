"""The exact secrets the gateway holds, found in any text in one pass, added in O(1).

Every secret in use (tokens, the keys the relay has sent) is masked in every log line
whatever its shape. A regex of all of them had to be recompiled for each new key: 0.2–0.6 s
on the event loop per new key once a few thousand were known (issue 12.2). Here each
secret is filed under its first `ANCHOR` characters; a scan looks up each `ANCHOR`-long
window of the text in that index (one slice and one dict lookup per position, whatever the
number of secrets) and, on a hit, compares the few secrets filed there, longest first. Adding
a secret touches one bucket; the table is bounded (`LIMIT`, least recently added dropped).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["KnownSecrets"]


class KnownSecrets:
    """Exact strings to mask; `replace(text)` masks each occurrence, leftmost and longest."""

    LIMIT = 4096
    MIN_LEN = 8  # shorter values would mask ordinary words
    ANCHOR = MIN_LEN

    def __init__(self, mask: Callable[[str], str]) -> None:
        self._mask = mask
        self._lock = threading.Lock()
        self._order: OrderedDict[str, str] = OrderedDict()  # secret → its replacement
        # First ANCHOR characters → the secrets starting so, longest first. Buckets are
        # replaced, never changed in place, so a scan in another thread sees a whole one.
        self._index: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def add(self, value: str | None) -> None:
        if not value or len(value) < self.MIN_LEN:
            return
        with self._lock:
            if value in self._order:
                self._order.move_to_end(value)
                return
            self._order[value] = self._mask(value)
            self._file(value)
            while len(self._order) > self.LIMIT:
                old, _ = self._order.popitem(last=False)
                self._unfile(old)

    def _file(self, value: str) -> None:
        anchor = value[: self.ANCHOR]
        bucket = (*self._index.get(anchor, ()), value)
        self._index[anchor] = tuple(sorted(bucket, key=len, reverse=True))

    def _unfile(self, value: str) -> None:
        anchor = value[: self.ANCHOR]
        bucket = tuple(v for v in self._index.get(anchor, ()) if v != value)
        if bucket:
            self._index[anchor] = bucket
        else:
            self._index.pop(anchor, None)

    def replace(self, text: str) -> str:
        index = self._index
        if not index or len(text) < self.ANCHOR:
            return text
        order, width = self._order, self.ANCHOR
        parts: list[str] = []
        done = i = 0
        end = len(text) - width
        while i <= end:
            bucket = index.get(text[i : i + width])
            if bucket is not None:
                for secret in bucket:
                    if text.startswith(secret, i):
                        parts.append(text[done:i])
                        parts.append(order.get(secret) or "[redacted]")
                        i = done = i + len(secret)
                        break
                else:
                    i += 1
            else:
                i += 1
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)
