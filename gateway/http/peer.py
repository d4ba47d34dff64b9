"""The client's address on requests the front bridges to this app (see `gateway.front.bridge`).

The app never listens anywhere: its connections are socket pairs opened by the front, whose
peer address says nothing. The front passes the real one in `X-PowerMem-Gateway-Peer`, which
is trusted only on such a connection (no peer address of its own); a client cannot send it,
because the front door refuses every `X-PowerMem-*` header it does not know.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["PEER_HEADER", "peer_middleware"]

PEER_HEADER = b"x-powermem-gateway-peer"
_NAME = PEER_HEADER.decode()


@web.middleware
async def peer_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    peer = request.headers.get(_NAME)
    if peer is not None:
        transport = request.transport
        own_address = transport.get_extra_info("peername") if transport is not None else None
        if not isinstance(own_address, tuple):
            request = request.clone(remote=peer)
    response: web.StreamResponse = await handler(request)
    return response
