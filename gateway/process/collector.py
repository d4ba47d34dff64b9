"""Full garbage collections on the worker's schedule, not in the middle of requests.

A full collection walks every object the collector tracks in its oldest generation. In a
worker under load that was 40 000-50 000 objects besides everything made at start (records,
metric children, provider pools), and each full collection stalled the event loop for 14-70
ms: every request in flight waited it out, which set the p99 under floods (issue 12). So:

- what exists once the app has started (modules, the app, its tables) is frozen, never walked;
- the young generations are still collected automatically: they hold new objects only;
- full collections are not automatic: one runs once no request has been in flight for a
  moment, at most every `IDLE_EVERY` seconds, and at least every `AT_LEAST_EVERY` seconds
  even under load that never pauses.

The request paths leave no cyclic garbage behind (connections drop their parsers when they
are lost), so little waits for the next full collection. After each one, on glibc, the
memory freed since is handed back to the system (`malloc_trim`): a flood's buffers and
connections otherwise leave the worker's resident size at its high-water mark.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable

__all__ = ["AT_LEAST_EVERY", "IDLE_EVERY", "full_collections", "take_over"]

IDLE_EVERY = 30.0
AT_LEAST_EVERY = 600.0
_CHECK = 1.0
# The oldest generation's threshold counts collections of the middle one: never reached.
_NEVER = 1 << 30


def _trimmer() -> Callable[[], object]:
    """glibc's `malloc_trim(0)`, or nothing where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def take_over() -> None:
    """Freeze what the started app made, and stop automatic full collections."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)


async def full_collections(
    busy: Callable[[], bool],
    *,
    idle_every: float = IDLE_EVERY,
    at_least_every: float = AT_LEAST_EVERY,
    check: float = _CHECK,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run forever: a full collection when idle (`busy()` false) and `idle_every` has passed
    since the last one, or whenever `at_least_every` has."""
    trim = _trimmer()
    last = clock()
    while True:
        await asyncio.sleep(check)
        since = clock() - last
        if (since >= idle_every and not busy()) or since >= at_least_every:
            gc.collect()
            trim()
            last = clock()
