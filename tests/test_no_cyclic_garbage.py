"""Closed connections leave no cyclic garbage: a parser holds its connection's callbacks, so a
connection that kept its parser after it was lost could only be freed by a full collection,
and full collections stall the event loop (gateway.process.collector)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest
from httptools import HttpRequestParser, HttpResponseParser

from gateway.front.connection import FrontProtocol
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.wire.client import ClientConnection
from tests.frontserver import GatewayTestServer
from tests.rawhttp import raw

OURS = (FrontProtocol, ClientConnection, HttpRequestParser, HttpResponseParser)


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """What the collector finds unreachable from here on, kept for inspection."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_connections_closed_by_either_side_are_freed_without_the_collector(
    make_settings: Callable[..., Settings], saved_garbage: list[object]
) -> None:
    server = GatewayTestServer(create_app(make_settings()))
    await server.start_server()
    assert server.port is not None
    port = server.port
    for n in range(20):
        async with raw(port) as client:
            close = b"Connection: close\r\n" if n % 2 else b""
            await client.send(
                b"GET /api/v1/memories HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%b\r\n" % (port, close)
            )
            assert (await client.final()).status == 200
    await server.close()  # the upstream connections close with the gateway's pools
    gc.collect()
    left = [type(o).__name__ for o in saved_garbage if isinstance(o, OURS)]
    assert left == []
