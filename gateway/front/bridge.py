"""The gateway's own routes: handed to the aiohttp app, in-process, over a socket pair.

The app (`gateway.http.app.create_app`) serves the management API, status, metrics and the
OpenAPI document. Its server is never listening anywhere: each bridge connection is one end
of a `socketpair()` whose other end the app's `web.Server` accepted, pooled like any other
upstream connection. The request goes in under its canonical path (so `/API/v1/Instances;x`
reaches the same handler as `/api/v1/instances`), with the client's address in
`X-PowerMem-Gateway-Peer` — a header no client can send, since the front door refuses every
`X-PowerMem-*` name it does not know — and without any provider key header.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from gateway.front.exchange import Exchange
from gateway.front.forward import forward
from gateway.front.paths import Route
from gateway.http.peer import PEER_HEADER
from gateway.wire.client import ClientConnection
from gateway.wire.heads import HOP_BY_HOP, Header, connection_tokens
from gateway.wire.pool import Pool

__all__ = ["Bridge"]

# Long enough for the slowest own route (the wiring probe waits up to 30 s for powermem).
BRIDGE_TIMEOUT = 120.0
_DROP = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class Bridge:
    def __init__(self, inner: web.Server, *, limit: int = 64) -> None:
        self._inner = inner
        self.pool = Pool(self._connect, limit=limit, acquire_timeout=10.0, connect_timeout=5.0)

    async def _connect(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            await loop.connect_accepted_socket(self._inner, theirs)
            _, conn = await loop.create_connection(ClientConnection, sock=ours)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        return conn

    async def handle(self, ex: Exchange, route: Route) -> None:
        await forward(
            ex,
            self.pool,
            target=route.target.encode(),
            headers=_app_headers(ex),
            rewrite=lambda status, headers: _held_if_refused(ex, status, headers),
            timeout=BRIDGE_TIMEOUT,
            name="gateway's own",
        )

    async def close(self) -> None:
        await self.pool.close()


def _app_headers(ex: Exchange) -> list[Header]:
    drop = HOP_BY_HOP | connection_tokens(ex.headers) | _DROP
    out = [h for h in ex.headers if h[0] not in drop and not h[0].startswith(b"x-powermem-llm-")]
    out.append((PEER_HEADER, ex.peer.encode()))
    return out


def _held_if_refused(ex: Exchange, status: int, headers: list[Header]) -> list[Header]:
    """Every 429 of the app is the gateway's own refusal (admin back-off, instance caps)."""
    ex.refused = status == 429
    return headers
