"""HTTP/1.1's sharp edges on the front, written as raw bytes: smuggling and framing, chunked
bodies both ways, `Expect: 100-continue`, pipelining, `Upgrade`, bodiless answers, HTTP/1.0,
and the request targets that are not a plain path."""

from __future__ import annotations

import hashlib
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import BadRequest
from tests.fakes.upstream import Recorder
from tests.rawhttp import raw

Client = TestClient[web.Request, web.Application]


def host(gateway: Client) -> bytes:
    return b"Host: 127.0.0.1:%d\r\n" % gateway.server.port


def envelope_code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


SMUGGLING = {
    "content-length and transfer-encoding": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1"
    ),
    "two content-lengths, same value": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "two content-lengths, different values": (
        b"Content-Length: 5\r\nContent-Length: 11\r\n\r\nhelloGET /x"
    ),
    "a content-length list": b"Content-Length: 5, 5\r\n\r\nhello",
    "a signed content-length": b"Content-Length: +5\r\n\r\nhello",
    "obs-fold": b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "a bare CR in a value": b"X-Bare: a\rb\r\nContent-Length: 0\r\n\r\n",
    "a space before the colon": b"Content-Length : 5\r\n\r\nhello",
    "chunked then another coding": b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "transfer-encoding twice": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "a coding that is not chunked": b"Transfer-Encoding: gzip\r\n\r\nabc",
    "a misspelt chunked": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "a chunk size that is not hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "a negative chunk size": b"Transfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n",
    "a chunk size past 64 bits": (
        b"Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"
    ),
    "a chunk without its CRLF": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("rest", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_ambiguous_framing_is_a_400_that_closes_and_forwards_nothing(
    gateway: Client, recorder: Recorder, rest: bytes
) -> None:
    """A request whose length two servers could read differently is refused whole: 400 in the
    envelope, the connection closed, and powermem never acts on any part of it."""
    async with raw(gateway.server.port) as client:
        await client.send(b"POST /api/v1/memories HTTP/1.1\r\n" + host(gateway) + rest)
        answer = await client.final()
        assert answer.status == 400
        assert envelope_code(answer.body) == BadRequest.code
        assert answer.header("connection") == "close"
        assert await client.closed() == b""
    assert recorder.requests == []


async def test_bare_lf_line_endings_are_refused(gateway: Client, recorder: Recorder) -> None:
    """A head whose lines end in a bare LF is a 400, never parsed leniently."""
    async with raw(gateway.server.port) as client:
        await client.send(b"GET /x HTTP/1.1\n" + host(gateway).replace(b"\r\n", b"\n") + b"\n")
        assert (await client.final()).status == 400
    assert recorder.requests == []


async def test_trailers_are_not_turned_into_request_headers(
    gateway: Client, recorder: Recorder
) -> None:
    """A chunked body with chunk extensions and a trailer arrives whole, and the trailer
    field never becomes a header of the forwarded request."""
    body = b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Trailer: smuggled\r\n\r\n"
    async with raw(gateway.server.port) as client:
        await client.send(
            b"POST /api/v1/memories HTTP/1.1\r\n"
            + host(gateway)
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + body
        )
        assert (await client.final()).status == 200
    assert recorder.last.body == b"hello world"
    assert "X-Trailer" not in recorder.last.headers


async def test_a_chunked_upload_arrives_byte_for_byte(gateway: Client, recorder: Recorder) -> None:
    """Chunks of every size, sent in pieces that split sizes and CRLFs, reach powermem as the
    exact bytes, with a framing it can read."""
    payload = bytes(range(256)) * 700
    sizes = [1, 2, 15, 16, 17, 4095, 4096, 65537]
    wire, offset = b"", 0
    for size in sizes:
        piece = payload[offset : offset + size]
        wire += b"%x\r\n%b\r\n" % (len(piece), piece)
        offset += size
    wire += b"%X\r\n%b\r\n0\r\n\r\n" % (len(payload) - offset, payload[offset:])
    async with raw(gateway.server.port) as client:
        await client.send(
            b"PUT /api/v1/memories/m1 HTTP/1.1\r\n"
            + host(gateway)
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for start in range(0, len(wire), 7001):
            await client.send(wire[start : start + 7001])
        answer = await client.final()
    assert answer.status == 200
    assert recorder.last.body == payload
    assert json.loads(answer.body)["data"]["body_sha256"] == hashlib.sha256(payload).hexdigest()


async def test_a_chunked_answer_reaches_the_client_byte_for_byte(gateway: Client) -> None:
    """powermem's chunked answer (an event stream) reaches the client chunked, with exactly
    the bytes powermem wrote and a proper last chunk."""
    async with raw(gateway.server.port) as client:
        await client.send(b"GET /sse?pause=0 HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        answer = await client.final()
        assert answer.chunked and answer.whole
        assert answer.body == b"".join(b"event: tick\ndata: %d\n\n" % n for n in range(3))
        assert answer.wire.endswith(b"0\r\n\r\n")
        await client.send(b"GET /after HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        assert (await client.final()).status == 200


async def test_expect_continue_is_answered_once_before_the_body(
    gateway: Client, recorder: Recorder
) -> None:
    """`Expect: 100-continue` gets exactly one 100 once the body is wanted, then the answer."""
    async with raw(gateway.server.port) as client:
        await client.send(
            b"POST /api/v1/memories HTTP/1.1\r\n"
            + host(gateway)
            + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await client.response()
        assert (interim.status, interim.body) == (100, b"")
        await client.send(b"hello")
        answer = await client.response()
        assert answer.status == 200
        assert await client.silent(0.2)  # no second 100, nothing else
    assert recorder.last.body == b"hello"
    assert "Expect" not in recorder.last.headers


@pytest.mark.parametrize(
    "path, extra",
    [
        ("/api/v1/memories", b"X-PowerMem-Instance-Id: pmem-0123456789abcdef\r\n"),
        ("/api/v1/memories", b"X-PowerMem-Instance: pmem-0123456789abcdef\r\n"),
        ("/relay/v1/chat/completions", b""),
    ],
    ids=["unknown header", "unknown instance", "relay without its token"],
)
async def test_a_refused_expect_continue_request_never_reads_the_body(
    gateway: Client, recorder: Recorder, path: str, extra: bytes
) -> None:
    """A request refused before its body is wanted gets its error instead of 100 Continue,
    says it closes, and the unread body is never taken for a next request."""
    async with raw(gateway.server.port) as client:
        await client.send(
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\n"
            + host(gateway)
            + extra
            + b"Content-Length: 40\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = await client.response()
        assert answer.status >= 400
        assert answer.header("connection") == "close"
        await client.send(b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert await client.closed() == b""
    assert recorder.requests == []


async def test_pipelined_requests_are_answered_in_order_errors_included(
    gateway: Client, recorder: Recorder
) -> None:
    """Six requests in one write (proxied, with a body, a powermem 404, a refused header, one
    of our own routes) get six answers in order; a malformed seventh gets its 400 last."""
    h = host(gateway)
    requests = (
        b"GET /a HTTP/1.1\r\n" + h + b"\r\n",
        b"POST /b HTTP/1.1\r\n" + h + b"Content-Length: 3\r\n\r\nabc",
        b"GET /fail?status=404 HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /c HTTP/1.1\r\n" + h + b"X-PowerMem-Bogus: 1\r\n\r\n",
        b"GET /gateway/health HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /d HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /e HTTP/1.1\r\n" + h + b"X-Folded: a\r\n b\r\n\r\n",
    )
    async with raw(gateway.server.port) as client:
        await client.send(b"".join(requests))
        answers = [await client.final() for _ in range(len(requests))]
        assert await client.closed() == b""
    assert [a.status for a in answers] == [200, 200, 404, 400, 200, 200, 400]
    assert [json.loads(answers[n].body)["data"]["path_qs"] for n in (0, 1, 5)] == ["/a", "/b", "/d"]
    assert envelope_code(answers[3].body) == "INVALID_HEADER"
    assert envelope_code(answers[6].body) == BadRequest.code
    assert [s.path_qs for s in recorder.requests] == ["/a", "/b", "/fail?status=404", "/d"]


async def test_h2c_upgrade_without_a_body_is_served_as_plain_http(
    gateway: Client, recorder: Recorder
) -> None:
    """An `Upgrade: h2c` GET gets an ordinary HTTP/1.1 answer, the upgrade headers are not
    forwarded, and the connection stays usable."""
    async with raw(gateway.server.port) as client:
        await client.send(
            b"GET /x HTTP/1.1\r\n"
            + host(gateway)
            + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            + b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        answer = await client.final()
        assert (answer.version, answer.status) == (b"HTTP/1.1", 200)
        await client.send(b"GET /y HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        assert (await client.final()).status == 200
    for name in ("Upgrade", "HTTP2-Settings", "Connection"):
        assert name not in recorder.requests[0].headers


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_an_upgrade_request_with_a_body_is_refused_not_forwarded_empty(
    gateway: Client, recorder: Recorder, framing: bytes
) -> None:
    """An `Upgrade` request that carries a body is a 400 and closes: the parser stops at an
    upgrade, so forwarding it would silently drop its body."""
    async with raw(gateway.server.port) as client:
        await client.send(
            b"POST /api/v1/memories HTTP/1.1\r\n"
            + host(gateway)
            + b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
            + framing
        )
        answer = await client.final()
        assert answer.status == 400
        assert await client.closed() == b""
    assert recorder.requests == []


async def test_head_and_bodiless_statuses_carry_no_body(gateway: Client) -> None:
    """HEAD, 204 and 304 answers end at their head (HEAD keeps its Content-Length), and the
    next request on the connection is read correctly."""
    async with raw(gateway.server.port) as client:
        await client.send(b"HEAD /x HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        head = await client.final(head_request=True)
        assert head.status == 200 and int(head.header("content-length") or 0) > 0
        for status in (204, 304):
            await client.send(
                b"GET /fail?status=%d HTTP/1.1\r\n" % status + host(gateway) + b"\r\n"
            )
            answer = await client.final()
            assert answer.status == status
            assert answer.header("content-length") is None
            assert answer.header("transfer-encoding") is None
        await client.send(b"GET /last HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        last = await client.final()
        assert json.loads(last.body)["data"]["path_qs"] == "/last"


async def test_an_http_10_client_gets_its_answer_and_a_close(gateway: Client) -> None:
    """HTTP/1.0 without keep-alive: a 1.0 answer, never chunked, then the connection closes."""
    async with raw(gateway.server.port) as client:
        await client.send(b"GET /sse?pause=0 HTTP/1.0\r\n" + host(gateway) + b"\r\n")
        answer = await client.final()
        assert answer.version == b"HTTP/1.0" and not answer.chunked
        assert answer.body.count(b"event: tick") == 3
        assert answer.header("connection") == "close"


async def test_an_http_10_keep_alive_client_is_told_the_connection_persists(
    gateway: Client,
) -> None:
    """HTTP/1.0 with `Connection: keep-alive`: the answer says keep-alive (a 1.0 client
    assumes close otherwise) and a second request works on the same connection."""
    request = b"GET /x HTTP/1.0\r\n" + host(gateway) + b"Connection: keep-alive\r\n\r\n"
    async with raw(gateway.server.port) as client:
        await client.send(request)
        first = await client.final()
        assert first.status == 200
        assert (first.header("connection") or "").lower() == "keep-alive"
        await client.send(request)
        assert (await client.final()).status == 200


async def test_an_absolute_form_target_is_read_as_its_path(
    gateway: Client, recorder: Recorder
) -> None:
    """`GET http://127.0.0.1:port/x?q=1` is proxied as `/x?q=1`; the same form to our own
    routes reaches them, and one naming another host is refused."""
    port = gateway.server.port
    async with raw(port) as client:
        await client.send(b"GET http://127.0.0.1:%d/x?q=1 HTTP/1.1\r\n" % port + host(gateway))
        await client.send(b"\r\n")
        assert (await client.final()).status == 200
        await client.send(
            b"GET http://localhost:%d//gateway//health HTTP/1.1\r\n" % port
            + host(gateway)
            + b"\r\n"
        )
        own = await client.final()
        assert own.status == 200 and json.loads(own.body)["data"]["status"] == "ok"
        await client.send(b"GET http://evil.example/x HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        evil = await client.final()
        assert evil.status == 421
    assert [s.path_qs for s in recorder.requests] == ["/x?q=1"]


async def test_options_star_is_answered_by_the_gateway(gateway: Client, recorder: Recorder) -> None:
    """`OPTIONS *` asks about the server, not a resource: answered here with the methods we
    take, never turned into a request for powermem's `/`."""
    async with raw(gateway.server.port) as client:
        await client.send(b"OPTIONS * HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        answer = await client.final()
        assert answer.status in (200, 204)
        assert "GET" in (answer.header("allow") or "")
        await client.send(b"GET /after HTTP/1.1\r\n" + host(gateway) + b"\r\n")
        assert (await client.final()).status == 200
    assert [s.path_qs for s in recorder.requests] == ["/after"]


async def test_connect_is_refused_and_its_tunnel_bytes_are_never_read_as_http(
    gateway: Client, recorder: Recorder
) -> None:
    """CONNECT is a 405 that closes: what the client sends next (tunnel bytes) is never
    parsed as a request of its own."""
    async with raw(gateway.server.port) as client:
        await client.send(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
            b"GET /tunnelled HTTP/1.1\r\n" + host(gateway) + b"\r\n"
        )
        answer = await client.final()
        assert answer.status == 405
        assert await client.closed() == b""
    assert recorder.requests == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n",
        b"GET /x HTTP/1.1\r\nX-Long: " + b"v" * 33000 + b"\r\n",
        b"GET /x HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % n for n in range(101)),
    ],
    ids=["target", "one field", "too many fields"],
)
async def test_an_oversized_head_is_431_and_forwards_nothing(
    gateway: Client, recorder: Recorder, head: bytes
) -> None:
    """A head past our limits (target, one field, the number of fields) is a 431 that closes."""
    async with raw(gateway.server.port) as client:
        await client.send(head + host(gateway) + b"\r\n")
        answer = await client.final()
        assert answer.status == 431
        assert envelope_code(answer.body) == "HEADERS_TOO_LARGE"
        assert await client.closed() == b""
    assert recorder.requests == []


@pytest.mark.parametrize("version", [b"2.0", b"0.9"])
async def test_a_request_line_for_another_http_version_is_505(
    gateway: Client, recorder: Recorder, version: bytes
) -> None:
    """`HTTP/2.0` or `HTTP/0.9` on a request line (which llhttp parses) gets a 505 in an
    HTTP/1.1 status line, never an answer claiming that version; nothing is forwarded."""
    async with raw(gateway.server.port) as client:
        await client.send(b"GET /x HTTP/" + version + b"\r\n" + host(gateway) + b"\r\n")
        answer = await client.final()
        assert (answer.version, answer.status) == (b"HTTP/1.1", 505)
        assert envelope_code(answer.body) == "HTTP_VERSION_NOT_SUPPORTED"
        assert await client.closed() == b""
    assert recorder.requests == []
