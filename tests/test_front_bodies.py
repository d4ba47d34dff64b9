"""Request bodies reach powermem exactly as the client sent them: encoded bodies untouched
with headers that still describe them, bodies on both sides of the replay limit, and chunked
uploads streamed (powermem sees the first chunk before the client has sent the last)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.front.forward import REPLAY_LIMIT
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.fakes.raw_upstream import RawConn, RawUpstream, answer
from tests.frontserver import GatewayTestServer
from tests.rawhttp import raw

Client = TestClient[web.Request, web.Application]
MEMORY = json.dumps({"content": "I keep bees in Porto. " * 200, "user_id": "dora"}).encode()


async def read_body(conn: RawConn, headers: dict[str, str]) -> bytes:
    """The request body as it came on the wire: de-chunked if chunked, never decoded."""
    if "content-length" in headers:
        data = await conn.reader.readexactly(int(headers["content-length"]))
        conn.received += data
        return data
    if headers.get("transfer-encoding") != "chunked":
        return b""
    body = b""
    while True:
        line = await conn.reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0], 16)
        chunk = await conn.reader.readexactly(size + 2)
        if size == 0:
            return body
        body += chunk[:-2]


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []


@pytest.fixture
async def exact() -> AsyncIterator[tuple[RawUpstream, Seen]]:
    """An upstream that records each request's headers and its body bytes as received."""
    seen = Seen()

    async def behaviour(conn: RawConn) -> None:
        while (request := await conn.request(read_body=False)) is not None:
            body = await read_body(conn, request.headers)
            seen.requests.append((request.headers, body))
            reply = {"sha256": hashlib.sha256(body).hexdigest(), "len": len(body)}
            await conn.send(answer(200, json.dumps(reply).encode()))

    async with RawUpstream(behaviour) as server:
        yield server, seen


@pytest.fixture
async def gw(
    aiohttp_client: Any, make_settings: Callable[..., Settings], exact: tuple[RawUpstream, Seen]
) -> Client:
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(upstream=exact[0].url)))
    )
    return client


@pytest.mark.parametrize(
    "encoding, encode",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("br", lambda data: b"\x1b" + data[:100]),  # opaque to us: never decoded
        ("gzip, identity", gzip.compress),
    ],
)
async def test_an_encoded_body_reaches_powermem_byte_for_byte(
    gw: Client, exact: tuple[RawUpstream, Seen], encoding: str, encode: Callable[[bytes], bytes]
) -> None:
    """A body sent with `Content-Encoding` arrives exactly as sent, with that encoding and a
    length that counts the encoded bytes (a length for the decoded body would hang powermem)."""
    body = encode(MEMORY)
    response = await gw.post(
        "/api/v1/memories",
        data=body,
        headers={"Content-Encoding": encoding, "Content-Type": "application/json"},
    )
    assert response.status == 200
    headers, received = exact[1].requests[-1]
    assert received == body
    assert headers["content-encoding"] == encoding
    assert headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in headers


async def test_a_chunked_gzip_upload_stays_chunked_and_encoded(
    gw: Client, exact: tuple[RawUpstream, Seen]
) -> None:
    """A gzip body sent chunked arrives chunked with the same bytes and its encoding."""
    body = gzip.compress(MEMORY)
    port = gw.server.port
    wire = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in (body[:10], body[10:])) + b"0\r\n\r\n"
    async with raw(port) as client:
        await client.send(
            b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" + wire
        )
        assert (await client.final()).status == 200
    headers, received = exact[1].requests[-1]
    assert received == body
    assert headers["content-encoding"] == "gzip"
    assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers


@pytest.mark.parametrize("size", [REPLAY_LIMIT - 1, REPLAY_LIMIT, REPLAY_LIMIT + 1, 5_000_000])
async def test_bodies_either_side_of_the_replay_limit_arrive_whole(
    gw: Client, exact: tuple[RawUpstream, Seen], size: int
) -> None:
    """Bodies held for a retry (up to 1 MiB) and bodies streamed past it arrive byte for byte
    with their own length, and the next request on the connection is unaffected."""
    body = bytes(range(251)) * (size // 251) + b"x" * (size % 251)
    response = await gw.put("/api/v1/memories/m1", data=io.BytesIO(body))
    reply = await response.json()
    assert reply == {"sha256": hashlib.sha256(body).hexdigest(), "len": size}
    assert exact[1].requests[-1][0]["content-length"] == str(size)
    after = await gw.get("/api/v1/memories")
    assert (await after.json())["len"] == 0


async def test_a_chunked_upload_is_streamed_not_buffered(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """powermem receives the first chunk of an upload while the client still holds the rest:
    the body streams through instead of waiting whole in the gateway."""
    first_arrived = asyncio.Event()

    async def behaviour(conn: RawConn) -> None:
        request = await conn.request(read_body=False)
        assert request is not None
        line = await conn.reader.readuntil(b"\r\n")
        first = await conn.reader.readexactly(int(line, 16) + 2)
        assert first == b"first!\r\n"
        first_arrived.set()
        rest = await read_body(conn, request.headers)
        await conn.send(answer(200, json.dumps({"rest": rest.decode()}).encode()))

    async with RawUpstream(behaviour) as server:
        client: Client = await aiohttp_client(
            GatewayTestServer(create_app(make_settings(upstream=server.url)))
        )
        async with raw(client.server.port) as sender:
            await sender.send(
                b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n6\r\nfirst!\r\n"
            )
            await asyncio.wait_for(first_arrived.wait(), 5)
            await sender.send(b"5\r\nlater\r\n0\r\n\r\n")
            reply = await sender.final()
        assert json.loads(reply.body) == {"rest": "later"}
