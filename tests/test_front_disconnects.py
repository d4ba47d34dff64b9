"""Connections that end at the wrong moment, on either side of the front: nothing leaks, nothing
is logged as an error, a cut answer is never taken for a whole one, the next request works;
kept-alive connections that powermem closes silently never become a 502; slow clients are cut
on time and logged once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.front.server import Limits
from gateway.http.app import create_app
from gateway.http.appkeys import LEDGER, UPSTREAM, UPSTREAM_POOLS
from gateway.settings import Settings
from tests.binding import in_flight
from tests.fakes.raw_upstream import RawConn, RawUpstream, answer
from tests.fakes.upstream import SSE_GATE, Recorder
from tests.frontserver import GatewayTestServer
from tests.rawhttp import Raw, raw

Client = TestClient[web.Request, web.Application]
MakeGateway = Callable[..., Awaitable[GatewayTestServer]]


def host(port: int) -> bytes:
    return b"Host: 127.0.0.1:%d\r\n" % port


def in_use(app: web.Application) -> int:
    """Upstream connections taken by an exchange (both pools)."""
    pools, url = app[UPSTREAM_POOLS], app[UPSTREAM].url
    return pools.get(url, stream=False).in_use + pools.get(url, stream=True).in_use


async def settled(app: web.Application) -> None:
    """Wait (bounded) until no upstream connection and no ledger slot is taken."""
    for _ in range(200):
        if in_use(app) == 0 and app[LEDGER].in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{in_use(app)} connections, {app[LEDGER].in_flight} slots still taken")


Errors = Callable[[], list[str]]


def _the_fakes(record: logging.LogRecord) -> bool:
    """A fake server's own complaint (the test's powermem stand-in writing to a connection
    the gateway has rightly closed), not the gateway's."""
    trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
    return record.name.startswith("aiohttp") and "/tests/fakes/" in trace


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Errors:
    """`errors()`: what the gateway logged at ERROR or above so far in the test."""
    caplog.set_level(logging.WARNING)
    return lambda: [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and not _the_fakes(r)
    ]


@pytest.fixture
async def make_gateway(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[MakeGateway]:
    """`await make_gateway(limits=…, **settings)`: the whole front on a loopback port."""
    started: list[GatewayTestServer] = []

    async def start(*, limits: Limits | None = None, **overrides: Any) -> GatewayTestServer:
        server = GatewayTestServer(create_app(make_settings(**overrides)))
        await server.start_server(limits=limits)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


async def still_works(port: int) -> None:
    async with raw(port) as client:
        await client.send(b"GET /after HTTP/1.1\r\n" + host(port) + b"\r\n")
        answer = await client.final()
        assert answer.status == 200
        assert json.loads(answer.body)["data"]["path_qs"] == "/after"


# -- the client goes away ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent",
    [
        b"GET /api/v1/memo",
        b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nContent-Le",
        b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc",
        b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3000000\r\n\r\n"
        + b"x" * 200_000,
        b"POST /api/v1/memories HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5\r\nhello\r\n",
        b"POST /api/v1/instances HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{",
        b"POST /relay/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        + b"Content-Length: 90\r\n\r\n{",
    ],
    ids=[
        "mid-target",
        "mid-head",
        "mid-small-body",
        "mid-streamed-body",
        "mid-chunked-body",
        "own-route-mid-body",
        "relay-mid-body",
    ],
)
@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_leaving_mid_request_leaks_nothing_and_reaches_nothing(
    gateway: Client, recorder: Recorder, errors: Errors, sent: bytes, how: str
) -> None:
    """A client that closes or resets mid-head or mid-body: powermem never acts on the
    partial request, no connection or slot stays taken, nothing is logged as an error."""
    async with raw(gateway.server.port) as client:
        await client.send(sent)
        await asyncio.sleep(0.05)
        if how == "close":
            client.half_close()
            await client.closed()
        else:
            client.abort()
    await settled(gateway.server.app)
    assert recorder.requests == []
    await still_works(gateway.server.port)
    assert errors() == []


async def test_a_client_leaving_while_powermem_thinks_frees_the_upstream_connection(
    gateway: Client, errors: Errors
) -> None:
    """A client that leaves while powermem is still working: its upstream connection is
    closed at once (not held until powermem answers), its ledger slot freed."""
    async with raw(gateway.server.port) as client:
        port = gateway.server.port
        await client.send(b"GET /slow?seconds=3 HTTP/1.1\r\n" + host(port) + b"\r\n")
        for _ in range(100):
            if in_use(gateway.server.app):
                break
            await asyncio.sleep(0.01)
        assert in_use(gateway.server.app) == 1
    await settled(gateway.server.app)  # well before powermem's 3 s
    await still_works(gateway.server.port)
    assert errors() == []


async def test_a_client_leaving_mid_answer_frees_everything(
    gateway: Client, errors: Errors
) -> None:
    """A client that reads part of a large answer and leaves: nothing stays taken."""
    port = gateway.server.port
    async with raw(port) as client:
        await client.send(b"GET /big?size=20000000 HTTP/1.1\r\n" + host(port) + b"\r\n")
        await client.reader.readexactly(100_000)
        client.abort()
    await settled(gateway.server.app)
    await still_works(port)
    assert errors() == []


async def test_a_client_leaving_an_event_stream_frees_its_stream(
    gateway: Client, upstream: Any, errors: Errors
) -> None:
    """A client that leaves an event stream after its first event: the stream's upstream
    connection is closed and the client may open as many streams again."""
    port = gateway.server.port
    for _ in range(3):
        async with raw(port) as client:
            await client.send(
                b"GET /sse-gated HTTP/1.1\r\n" + host(port) + b"Accept: text/event-stream\r\n\r\n"
            )
            await client.reader.readuntil(b"data: 0\n\n")
        await settled(gateway.server.app)
    upstream.app[SSE_GATE].put_nowait(None)
    await still_works(port)
    assert errors() == []


# -- powermem goes away --------------------------------------------------------------------------


async def upstream_gateway(
    make_gateway: MakeGateway, server: RawUpstream, **kw: Any
) -> tuple[GatewayTestServer, int]:
    gw = await make_gateway(upstream=server.url, **kw)
    assert gw.port is not None
    return gw, gw.port


async def test_powermem_closing_mid_head_is_a_502_and_nothing_leaks(
    make_gateway: MakeGateway, errors: Errors
) -> None:
    """powermem dies after half a status line: the client gets the 502 envelope."""

    async def behaviour(conn: RawConn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        conn.close()

    async with RawUpstream(behaviour) as server:
        gw, port = await upstream_gateway(make_gateway, server)
        async with raw(port) as client:
            await client.send(b"GET /x HTTP/1.1\r\n" + host(port) + b"\r\n")
            reply = await client.final()
        assert reply.status == 502
        assert json.loads(reply.body)["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        await settled(gw.app)
    assert errors() == []


async def test_powermem_dying_before_it_answers_is_a_502_sent_once(
    make_gateway: MakeGateway, errors: Errors
) -> None:
    """powermem reads a request on a fresh connection and dies without a word: a 502 in
    the envelope, and the request is not sent again (it may have been acted on)."""

    async def behaviour(conn: RawConn) -> None:
        await conn.request()
        conn.close()

    async with RawUpstream(behaviour) as server:
        gw, port = await upstream_gateway(make_gateway, server)
        async with raw(port) as client:
            await client.send(
                b"POST /api/v1/memories HTTP/1.1\r\n" + host(port) + b"Content-Length: 2\r\n\r\n{}"
            )
            reply = await client.final()
        assert reply.status == 502
        assert len(server.connections) == 1
        await settled(gw.app)
    assert errors() == []


async def test_powermem_dying_mid_upload_is_a_502_and_frees_everything(
    make_gateway: MakeGateway, errors: Errors
) -> None:
    """powermem dies while a large upload is still arriving: the client gets a 502 that
    closes its connection (the rest of its body is not read as a request)."""

    async def behaviour(conn: RawConn) -> None:
        await conn.request(read_body=False)
        await conn.reader.readexactly(50_000)
        conn.close()

    async with RawUpstream(behaviour) as server:
        gw = await make_gateway(upstream=server.url)
        assert gw.port is not None
        port = gw.port
        async with raw(port) as client:
            await client.send(
                b"POST /api/v1/memories HTTP/1.1\r\n"
                + host(port)
                + b"Content-Length: 3000000\r\n\r\n"
                + b"u" * 200_000
            )
            reply = await client.final()
            assert reply.status == 502
            assert reply.header("connection") == "close"
        await settled(gw.app)
    assert errors() == []


@pytest.mark.parametrize(
    "head, sent",
    [
        (b"Content-Length: 1000\r\n", b"x" * 300),
        (b"Transfer-Encoding: chunked\r\n", b"64\r\n" + b"x" * 100 + b"\r\n"),
        (b"Transfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n", b"data: 1\n\n"),
    ],
    ids=["with a length", "chunked", "event stream"],
)
async def test_powermem_closing_mid_answer_reaches_the_client_as_a_cut(
    make_gateway: MakeGateway, errors: Errors, head: bytes, sent: bytes
) -> None:
    """powermem dies mid-body: the client's answer is visibly incomplete (short of its
    length, or no last chunk), never a silently complete body; the gateway keeps serving."""

    async def behaviour(conn: RawConn) -> None:
        request = await conn.request()
        if request is not None and request.target == "/ok":
            await conn.send(answer(200, b"{}"))
            return
        await conn.send(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n" + sent)
        await asyncio.sleep(0.05)
        conn.close()

    async with RawUpstream(behaviour) as server:
        gw, port = await upstream_gateway(make_gateway, server)
        async with raw(port) as client:
            await client.send(b"GET /x HTTP/1.1\r\n" + host(port) + b"\r\n")
            reply = await client.final()
            assert reply.status == 200 and not reply.whole
        async with raw(port) as client:
            await client.send(b"GET /ok HTTP/1.1\r\n" + host(port) + b"\r\n")
            assert (await client.final()).status == 200
        await settled(gw.app)
    assert errors() == []


def one_answer_per_connection(status: int = 200) -> Callable[[RawConn], Awaitable[None]]:
    """powermem after a 404 (or a body it did not read): answers, says nothing of closing,
    and closes the connection when the next request arrives on it, unanswered."""

    async def behaviour(conn: RawConn) -> None:
        request = await conn.request()
        if request is None:
            return
        body = json.dumps({"path": request.target, "len": len(request.body)}).encode()
        await conn.send(answer(status, body))
        await conn.reader.read(1)  # the next request arrives, and is dropped with the socket
        conn.close()

    return behaviour


@pytest.mark.parametrize("status", [200, 404, 500])
async def test_silently_closed_kept_alive_connections_never_become_a_502(
    make_gateway: MakeGateway, errors: Errors, status: int
) -> None:
    """Back-to-back requests (with and without a body) to a powermem that drops every
    kept-alive connection when it is reused: every one gets powermem's own answer."""
    async with RawUpstream(one_answer_per_connection(status)) as server:
        gw, port = await upstream_gateway(make_gateway, server)
        async with raw(port) as client:
            for n in range(10):
                body = b"y" * (n * 1000)
                await client.send(
                    b"POST /api/v1/memories/%d HTTP/1.1\r\n" % n
                    + host(port)
                    + b"Content-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                reply = await client.final()
                assert reply.status == status
                assert json.loads(reply.body) == {"path": f"/api/v1/memories/{n}", "len": len(body)}
        await settled(gw.app)
    assert errors() == []


async def test_an_early_answer_to_a_streamed_body_never_lends_its_connection_out(
    make_gateway: MakeGateway, errors: Errors
) -> None:
    """powermem answers a large upload before reading it (keep-alive, like an error page):
    that connection still expects the rest of the body, so the next request must never be
    sent on it (it would be read as body bytes and hang, or worse)."""

    async def behaviour(conn: RawConn) -> None:
        while (request := await conn.request(read_body=False)) is not None:
            if request.target == "/early":
                await conn.send(answer(413, b'{"detail":"too large"}'))
                await conn.drain_forever()  # still reading the upload, as a server would
                return
            await conn.send(answer(200, b'{"ok":true}'))

    async with RawUpstream(behaviour) as server:
        gw, port = await upstream_gateway(make_gateway, server, upstream_timeout=2.0)
        for framing, first in (
            (b"Content-Length: 3000000\r\n", b"z" * 100_000),
            (b"Transfer-Encoding: chunked\r\n", b"186a0\r\n" + b"z" * 100_000 + b"\r\n"),
        ):
            async with raw(port) as client:
                await client.send(b"POST /early HTTP/1.1\r\n" + host(port) + framing + b"\r\n")
                await client.send(first)
                reply = await client.final()
                assert reply.status == 413
                assert reply.header("connection") == "close"
            async with raw(port) as client:
                await client.send(b"GET /next HTTP/1.1\r\n" + host(port) + b"\r\n")
                assert (await client.final()).status == 200
        early = set(server.carrying(b"POST /early"))
        assert early and not early & set(server.carrying(b"GET /next"))
        await settled(gw.app)
    assert errors() == []


# -- slow clients --------------------------------------------------------------------------------


def slow_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"slow-{kind}" in r.getMessage()]


async def test_a_slowloris_head_is_cut_on_time_and_logged_once(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Heads trickled a byte at a time are cut at `header_timeout` from their first byte
    (a 408 when nothing else is under way), and three such clients make one log line."""
    caplog.set_level(logging.WARNING, logger="gateway.front")
    gw = await make_gateway(limits=Limits(header_timeout=0.3))
    assert gw.port is not None
    port = gw.port

    async def trickle(client: Raw) -> None:
        for byte in b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 1000:
            await client.send(bytes([byte]))
            await asyncio.sleep(0.02)

    loop = asyncio.get_running_loop()
    for _ in range(3):
        async with raw(port) as client:
            started = loop.time()
            sending = asyncio.create_task(trickle(client))
            reply = await client.final(within=3)
            sending.cancel()
            assert reply.status == 408
            assert await client.closed() == b""
            assert loop.time() - started < 2
    assert len(slow_lines(caplog, "header")) == 1
    await still_works(port)


async def test_a_stalled_body_is_cut_on_time_and_answered_408(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture, recorder: Recorder
) -> None:
    """A body that stops arriving is cut after `body_timeout` with a 408 (nothing of the
    answer was sent yet), powermem never acts on it, and two such clients make one line."""
    caplog.set_level(logging.WARNING, logger="gateway.front")
    gw = await make_gateway(limits=Limits(body_timeout=0.3))
    assert gw.port is not None
    port = gw.port
    for framing, part in (
        (b"Content-Length: 100\r\n", b"abc"),
        (b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n"),
    ):
        async with raw(port) as client:
            await client.send(
                b"POST /api/v1/memories HTTP/1.1\r\n" + host(port) + framing + b"\r\n"
            )
            await client.send(part)
            reply = await client.final(within=3)
            assert reply.status == 408
            assert json.loads(reply.body)["error"]["code"] == "REQUEST_TIMEOUT"
            assert await client.closed() == b""
    assert recorder.requests == []
    assert len(slow_lines(caplog, "body")) == 1
    await still_works(port)


async def test_a_client_that_stops_reading_is_cut_and_frees_powermem(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that asks for a large answer and never reads it is cut once its socket has
    taken nothing for `body_timeout`: its upstream connection does not stay held (a handful
    of such clients would otherwise take the whole pool), and it is logged once."""
    caplog.set_level(logging.WARNING, logger="gateway.front")
    gw = await make_gateway(limits=Limits(body_timeout=0.3))
    assert gw.port is not None
    port = gw.port
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            client = await stack.enter_async_context(raw(port))
            await client.send(b"GET /big?size=200000000 HTTP/1.1\r\n" + host(port) + b"\r\n")
        for _ in range(100):
            if in_use(gw.app) == 2:
                break
            await asyncio.sleep(0.01)
        assert in_use(gw.app) == 2
        await settled(gw.app)  # bounded: 2 s
    assert len(slow_lines(caplog, "send")) == 1
    await still_works(port)


async def test_connections_past_the_per_client_cap_are_refused_and_logged_once(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """One address holding `connections_per_client` connections gets its next ones closed at
    once (one log line for all of them); a freed place is usable again."""
    caplog.set_level(logging.WARNING, logger="gateway.front")
    gw = await make_gateway(limits=Limits(connections_per_client=3))
    assert gw.port is not None
    port = gw.port
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(raw(port)) for _ in range(3)]
        await held[0].send(b"GET /x HTTP/1.1\r\n" + host(port) + b"\r\n")
        assert (await held[0].final()).status == 200
        for _ in range(3):
            async with raw(port) as extra:
                with contextlib.suppress(ConnectionError):
                    await extra.send(b"GET /x HTTP/1.1\r\n" + host(port) + b"\r\n")
                with contextlib.suppress(ConnectionError):
                    assert await extra.closed() == b""
        lines = [r.getMessage() for r in caplog.records if "too-many-connections" in r.getMessage()]
        assert len(lines) == 1
        held[1].abort()
        await asyncio.sleep(0.05)
        await still_works(port)


async def test_powermem_leaving_a_relayed_stream_stops_the_provider_stream(
    aiohttp_client: Any, aiohttp_server: Any, make_settings: Callable[..., Settings], errors: Errors
) -> None:
    """powermem (the relay's caller) leaving a streamed completion mid-stream closes the
    provider's connection at once: the provider's stream ends instead of running on."""
    cut = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "x"}}],
        }
        try:
            for _ in range(500):
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            cut.set()  # the test server cancels a handler whose client left
            raise
        return response

    provider = web.Application()
    provider.router.add_post("/v1/chat/completions", stream)
    server = await aiohttp_server(provider)
    token = "pgr-disconnect-relay-token-0123"
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(relay_token=token)))
    )
    body = {
        "provider": "openai",
        "model": "m",
        "api_key": "sk-disc-0123456789abcdef",
        "base_url": str(server.make_url("/v1")),
    }
    registered = await client.post("/api/v1/instances", json=body)
    instance_id = (await registered.json())["data"]["instance_id"]
    chat = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {
        "Authorization": f"Bearer {token}",
        "baggage": in_flight(client.server.app, instance_id),
    }
    payload = json.dumps(chat).encode()
    async with raw(client.server.port) as caller:
        await caller.send(
            b"POST /relay/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        await caller.reader.readuntil(b"data: ")
    await asyncio.wait_for(cut.wait(), 3)
    assert errors() == []
