"""The exact secrets the gateway holds, found in any text in one pass, added in O(1).

Every secret in use (tokens, the keys the relay has sent) is masked in every log line
whatever its shape. A regex of all of them had to be recompiled for each new key: 0.2–0.6 s
on the event loop per new key once a few thousand were known (issue 12.2). Here a secret is
filed under the five 4-character pieces that start in its last 8 characters (the random end
of a key; beginnings like `sk-proj-` are shared by thousands). Any occurrence of a secret in
a text covers one text position that is a multiple of 5 with one of those pieces, so a scan
looks up every fifth position only (one slice, one dict lookup) and checks the few secrets
filed there, whatever the number of secrets. Adding one touches five buckets; the table is
bounded (`LIMIT`, least recently added dropped first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["KnownSecrets"]

_Filed = tuple[tuple[str, int], ...]  # (secret, where the piece starts in it)


class KnownSecrets:
    """Exact strings to mask; `replace(text)` masks each occurrence, leftmost and longest."""

    LIMIT = 4096
    MIN_LEN = 8  # shorter values would mask ordinary words
    PIECE = 4
    STEP = MIN_LEN - PIECE + 1  # pieces per secret, and the stride of a scan

    def __init__(self, mask: Callable[[str], str]) -> None:
        self._mask = mask
        self._lock = threading.Lock()
        self._order: OrderedDict[str, str] = OrderedDict()  # secret → its replacement
        # Buckets are replaced, never changed in place: a scan in another thread sees whole ones.
        self._index: dict[str, _Filed] = {}

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
            for piece, at in self._pieces(value):
                self._index[piece] = (*self._index.get(piece, ()), (value, at))
            while len(self._order) > self.LIMIT:
                old, _ = self._order.popitem(last=False)
                for piece, _at in self._pieces(old):
                    kept = tuple(e for e in self._index.get(piece, ()) if e[0] != old)
                    if kept:
                        self._index[piece] = kept
                    else:
                        self._index.pop(piece, None)

    def _pieces(self, value: str) -> list[tuple[str, int]]:
        first = len(value) - self.MIN_LEN
        return [(value[at : at + self.PIECE], at) for at in range(first, first + self.STEP)]

    def replace(self, text: str) -> str:
        index = self._index
        if not index or len(text) < self.MIN_LEN:
            return text
        piece = self.PIECE
        hits: list[tuple[int, int, str]] = []
        for j in range(0, len(text) - piece + 1, self.STEP):
            filed = index.get(text[j : j + piece])
            if filed is not None:
                for secret, at in filed:
                    start = j - at
                    if start >= 0 and text.startswith(secret, start):
                        hits.append((start, -len(secret), secret))
        if not hits:
            return text
        hits.sort()
        order = self._order
        parts: list[str] = []
        done = 0
        for start, _, secret in hits:  # leftmost first, the longest of those first
            if start < done:
                continue  # inside a secret already masked
            parts.append(text[done:start])
            parts.append(order.get(secret) or "[redacted]")
            done = start + len(secret)
        parts.append(text[done:])
        return "".join(parts)
