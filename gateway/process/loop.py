"""Which event loop a gateway process runs on.

uvloop (libuv) roughly halves the front's cost per proxied request against asyncio's own
loop (see the benchmarks in the README), so it is the default wherever it is installed;
`--loop asyncio` (POWERMEM_GATEWAY_LOOP) picks the standard library's.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `kind`; None means asyncio's default loop."""
    if kind == "asyncio" or (kind == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T], kind: str) -> T:
    """`asyncio.run`, on the loop `kind` names."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(coro)
