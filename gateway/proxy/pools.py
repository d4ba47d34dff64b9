"""Connections to powermem: one pool for ordinary requests, one for long-lived streams.

MCP sessions hold their response open for minutes (server-sent events); a slow upload holds
its request open. Giving them a pool of their own means neither kind can take every
connection from the other: 256 open MCP streams leave ordinary requests their full pool.
When the managed powermem restarts on a new port, the pools for the old address are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from yarl import URL

from gateway.wire.client import ClientConnection
from gateway.wire.pool import Pool

__all__ = ["UpstreamPools"]


class UpstreamPools:
    def __init__(
        self,
        *,
        ordinary: int = 128,
        streams: int = 128,
        acquire_timeout: float = 10.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._sizes = {False: ordinary, True: streams}
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._url = ""
        self._pools: dict[bool, Pool] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, url: str, *, stream: bool) -> Pool:
        if url != self._url:
            # Connections in use finish their exchange; the closed pool keeps none of them.
            for old in self._pools.values():
                task = asyncio.get_running_loop().create_task(old.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            self._pools = {}
            self._url = url
        pool = self._pools.get(stream)
        if pool is None:
            pool = self._pools[stream] = Pool(
                _connector(url),
                limit=self._sizes[stream],
                acquire_timeout=self._acquire_timeout,
                connect_timeout=self._connect_timeout,
            )
        return pool

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools = {}


def _connector(url: str) -> Callable[[], Awaitable[ClientConnection]]:
    parsed = URL(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 80

    async def connect() -> ClientConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(ClientConnection, host, port)
        return conn

    return connect
