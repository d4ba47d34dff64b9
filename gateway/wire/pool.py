"""Connections to one origin: a bounded number open, idle ones reused, stale ones dropped.

Waiting for a free connection and opening a new one are separate steps with separate
deadlines (`acquire_timeout`, `connect_timeout`): a pool whose connections are all taken by
long streams answers "busy" quickly instead of spending the connect deadline in a queue.
Idle connections are reused most-recent first (the one least likely to have been closed by
the server) and closed after `idle_timeout`; one that the server closes while idle leaves the
pool at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

from gateway.wire.client import ClientConnection

__all__ = ["Pool", "PoolBusy", "PoolClosed"]

Connector = Callable[[], Awaitable[ClientConnection]]


class PoolBusy(Exception):
    """Every connection was in use for longer than the acquire deadline."""


class PoolClosed(Exception):
    """The pool was closed (the gateway is stopping, or an LRU evicted the origin)."""


class Pool:
    def __init__(
        self,
        connect: Connector,
        *,
        limit: int,
        acquire_timeout: float,
        connect_timeout: float,
        idle_timeout: float = 30.0,
        on_idle: Callable[[int], None] | None = None,
    ) -> None:
        self._connect = connect
        self.limit = limit
        self.acquire_timeout = acquire_timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._idle: list[ClientConnection] = []
        # Told +1 / -1 as connections become idle or stop being idle (an owner's total).
        self._on_idle = on_idle
        self._open: set[ClientConnection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False
        self.last_used = time.monotonic()

    @property
    def in_use(self) -> int:
        return len(self._open) + self._connecting - len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> ClientConnection:
        """A connection for one exchange; `fresh` skips idle ones (for a request that cannot be
        replayed, so a stale connection must not get the chance to lose it)."""
        self.last_used = time.monotonic()
        deadline: float | None = None
        while True:
            if self.closed:
                raise PoolClosed("the connection pool is closed")
            if not fresh:
                while self._idle:
                    conn = self._idle.pop()
                    self._idle_changed(-1)
                    if conn.reusable:
                        return conn
                    self._drop(conn)
            elif self._idle and len(self._open) + self._connecting >= self.limit:
                # Make room for the fresh one by closing the oldest idle connection.
                oldest = self._idle.pop(0)
                self._idle_changed(-1)
                self._drop(oldest)
            if len(self._open) + self._connecting < self.limit:
                return await self._new()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.acquire_timeout
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PoolBusy(f"all {self.limit} connections are in use")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                raise PoolBusy(f"all {self.limit} connections are in use") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def release(self, conn: ClientConnection, *, reuse: bool = True) -> None:
        """Give a connection back after its exchange; it is kept only if still reusable."""
        if reuse and conn.reusable and not self.closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._idle_changed(+1)
            self._schedule_sweep()
        else:
            self._drop(conn)
        self._wake()

    async def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._idle):
            self._drop(conn)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close_idle(self) -> None:
        """Close every idle connection now (the owner is shrinking its pools)."""
        for conn in list(self._idle):
            self._drop(conn)

    async def _new(self) -> ClientConnection:
        self._connecting += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await self._connect()
        except BaseException:
            self._connecting -= 1
            self._wake()
            raise
        self._connecting -= 1
        conn.on_close = self._forget
        self._open.add(conn)
        if self.closed:
            self._drop(conn)
            raise PoolClosed("the connection pool is closed")
        return conn

    def _drop(self, conn: ClientConnection) -> None:
        conn.close()
        self._forget(conn)

    def _forget(self, conn: ClientConnection) -> None:
        self._open.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
            self._idle_changed(-1)
        self._wake()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _idle_changed(self, delta: int) -> None:
        if self._on_idle is not None:
            self._on_idle(delta)

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _schedule_sweep(self) -> None:
        if self._sweeper is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.idle_timeout / 2, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.idle_timeout
        for conn in [c for c in self._idle if c.idle_since < cutoff]:
            self._drop(conn)
        if self._idle:
            self._schedule_sweep()
