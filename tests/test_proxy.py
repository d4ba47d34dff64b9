"""The reverse proxy to powermem: streaming both ways, honest headers, one baggage member."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import create_app
from gateway.settings import Settings
from tests.conftest import free_port
from tests.fakes.upstream import SSE_GATE, Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
KEY = "sk-test-proxy-0123456789abcdef"
LLM_HEADERS = {
    "X-PowerMem-LLM-Provider": "deepseek",
    "X-PowerMem-LLM-Model": "deepseek-chat",
    "X-PowerMem-LLM-Api-Key": KEY,
    "X-PowerMem-Client": "codex",
}


async def bound_id(gateway: Client) -> str:
    response = await gateway.get("/api/v1/system/health", headers=LLM_HEADERS)
    instance_id: str = response.headers["X-PowerMem-Instance"]
    return instance_id


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_method_path_and_query_reach_upstream_unchanged(
    gateway: Client, recorder: Recorder, method: str
) -> None:
    """Method, encoded path and repeated query parameters arrive exactly as sent."""
    path_qs = "/api/v1/memories/a%2Fb%20c?user_id=u%201&tag=x&tag=y&empty="
    response = await gateway.request(method, path_qs)
    assert response.status == 200
    assert (recorder.last.method, recorder.last.path_qs) == (method, path_qs)
    assert (await response.json())["data"]["path_qs"] == path_qs


async def test_head_request_is_forwarded_as_head(gateway: Client, recorder: Recorder) -> None:
    """HEAD stays HEAD and comes back with headers but no body."""
    response = await gateway.head("/api/v1/memories?x=1")
    assert response.status == 200
    assert recorder.last.method == "HEAD"
    assert await response.read() == b""


async def test_upstream_status_and_body_pass_through(gateway: Client) -> None:
    """A powermem error status and body come back as powermem wrote them, not re-wrapped."""
    response = await gateway.post("/fail?status=422", json={})
    assert response.status == 422
    assert await response.json() == {"success": False, "status": 422}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_large_request_body_arrives_intact(
    gateway: Client, recorder: Recorder, chunked: bool
) -> None:
    """A body of several MB, sized or chunked, reaches powermem byte for byte."""
    body = os.urandom(6 * 1024 * 1024 + 123)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    response = await gateway.post(
        "/api/v1/memories/batch",
        data=pieces() if chunked else io.BytesIO(body),
        headers={"Content-Type": "application/octet-stream"},
    )
    echoed = (await response.json())["data"]
    assert response.status == 200
    assert echoed["body_len"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert recorder.last.headers["Content-Type"] == "application/octet-stream"


async def test_large_response_body_arrives_intact(gateway: Client) -> None:
    """An 8 MB response streams back whole, with its length."""
    size = 8 * 1024 * 1024 + 7
    response = await gateway.get(f"/big?size={size}")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(size)
    received = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        assert chunk == b"x" * len(chunk)
        received += len(chunk)
    assert received == size


async def test_server_sent_events_arrive_one_by_one(gateway: Client, upstream: TestServer) -> None:
    """Each event reaches the client while powermem still holds back the next one."""
    gate = upstream.app[SSE_GATE]
    async with asyncio.timeout(10):
        response = await gateway.get("/sse-gated")
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        # The upstream cannot send event 1 before we open the gate, so a buffering proxy
        # would hang here and hit the timeout.
        assert await response.content.readuntil(b"\n\n") == b"event: tick\ndata: 0\n\n"
        gate.put_nowait(None)
        assert await response.content.readuntil(b"\n\n") == b"event: tick\ndata: 1\n\n"
        gate.put_nowait(None)
        assert await response.content.read() == b"event: tick\ndata: 2\n\n"


async def test_timed_sse_stream_is_not_buffered(gateway: Client) -> None:
    """The first event of a paced stream arrives well before the stream ends."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await gateway.get("/sse?pause=0.4")
    first = await response.content.readuntil(b"\n\n")
    first_at = loop.time() - start
    rest = await response.content.read()
    assert first == b"event: tick\ndata: 0\n\n"
    assert rest == b"event: tick\ndata: 1\n\nevent: tick\ndata: 2\n\n"
    assert first_at < loop.time() - start - 0.6


async def test_hop_by_hop_request_headers_are_dropped(gateway: Client, recorder: Recorder) -> None:
    """Connection-scoped headers, and those the Connection header lists, stop at the gateway."""
    await gateway.get(
        "/api/v1/memories",
        headers={
            "Connection": "keep-alive, X-Listed-Hop",
            "X-Listed-Hop": "secret-ish",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic cHJveHk6cHc=",
            "X-End-To-End": "kept",
        },
    )
    seen = {k.lower(): v for k, v in recorder.last.headers.items()}
    for name in ("x-listed-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen
    assert "x-listed-hop" not in seen.get("connection", "").lower()
    assert seen["x-end-to-end"] == "kept"


async def test_hop_by_hop_response_headers_are_dropped(gateway: Client) -> None:
    """Hop-by-hop headers of powermem's response do not reach the client."""
    response = await gateway.get("/hop")
    assert await response.text() == "hop"
    for name in ("X-Hop-Listed", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in response.headers
    assert response.headers["X-End-To-End"] == "keep me"


async def test_forwarded_headers_are_added(gateway: Client, recorder: Recorder) -> None:
    """X-Forwarded-For/Proto/Host tell powermem who asked and how."""
    await gateway.get("/api/v1/memories")
    seen = recorder.last.headers
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == f"{gateway.host}:{gateway.port}"
    # Host passes through too, so redirects powermem builds from it point at the gateway.
    assert seen["Host"] == seen["X-Forwarded-Host"]


async def test_forwarded_for_is_appended_to(gateway: Client, recorder: Recorder) -> None:
    """An X-Forwarded-For from an earlier proxy is kept, with our peer appended."""
    await gateway.get("/api/v1/memories", headers={"X-Forwarded-For": "203.0.113.9"})
    assert recorder.last.headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"


async def test_bound_request_carries_exactly_our_baggage(
    gateway: Client, recorder: Recorder
) -> None:
    """Upstream sees one baggage member, ours, and no client baggage or LLM header."""
    response = await gateway.post(
        "/api/v1/memories",
        json={"content": "hi"},
        headers=LLM_HEADERS
        | {
            "baggage": "powermem.instance=pmem-ffffffffffffffff,tenant=evil",
            "X-PowerMem-LLM-Base-Url": "https://api.deepseek.com/v1",
        },
    )
    instance_id = response.headers["X-PowerMem-Instance"]
    seen = recorder.last.headers
    instance, _, nonce = seen["baggage"].partition(",")
    assert instance == f"powermem.instance={instance_id}"
    assert re.fullmatch(r"powermem\.nonce=[0-9a-f]+-[0-9a-f]+-[0-9a-f]{32}", nonce)
    assert [k for k in seen if k.lower().startswith("x-powermem")] == []
    assert KEY not in str(seen)


async def test_instance_header_is_consumed_not_forwarded(
    gateway: Client, recorder: Recorder
) -> None:
    """A request by id reaches powermem with our baggage and none of the X-PowerMem headers."""
    instance_id = await bound_id(gateway)
    await gateway.get(
        "/api/v1/memories",
        headers=LLM_HEADERS | {"X-PowerMem-Instance": instance_id, "Baggage": "other=1"},
    )
    seen = recorder.last.headers
    instance, _, nonce = seen["baggage"].partition(",")
    assert instance == f"powermem.instance={instance_id}"
    assert re.fullmatch(r"powermem\.nonce=[0-9a-f]+-[0-9a-f]+-[0-9a-f]{32}", nonce)
    assert [k for k in seen if k.lower().startswith("x-powermem")] == []
    assert KEY not in str(seen)


async def test_unbound_request_is_forwarded_as_is_with_only_our_nonce(
    gateway: Client, recorder: Recorder
) -> None:
    """No instance and no LLM headers: headers and body pass unchanged; the client's baggage
    is replaced by our nonce alone (no instance member: the default LLM serves it)."""
    response = await gateway.post(
        "/api/v1/memories",
        data=b'{"content": "plain"}',
        headers={
            "Authorization": "Bearer powermem-api-key",
            "Content-Type": "application/json",
            "X-Custom": "1",
            "baggage": "tenant=someone",
            "X-PowerMem-Client": "cursor",
        },
    )
    assert response.status == 200
    assert "X-PowerMem-Instance" not in response.headers
    seen = recorder.last
    assert seen.body == b'{"content": "plain"}'
    assert seen.headers["Authorization"] == "Bearer powermem-api-key"
    assert seen.headers["X-Custom"] == "1"
    assert re.fullmatch(
        r"powermem\.nonce=[0-9a-f]+-[0-9a-f]+-[0-9a-f]{32}", seen.headers["baggage"]
    )
    assert "X-PowerMem-Client" not in seen.headers


async def test_creating_response_says_so_and_later_ones_do_not(gateway: Client) -> None:
    """The first bound response carries Instance-Created; later ones only the id."""
    first = await gateway.get("/api/v1/memories", headers=LLM_HEADERS)
    second = await gateway.get("/api/v1/memories", headers=LLM_HEADERS)
    assert first.headers["X-PowerMem-Instance-Created"] == "true"
    assert "X-PowerMem-Instance-Created" not in second.headers
    assert first.headers["X-PowerMem-Instance"] == second.headers["X-PowerMem-Instance"]


async def test_instance_header_is_on_streaming_and_error_responses(gateway: Client) -> None:
    """SSE and upstream-error responses of bound requests also name the instance."""
    instance_id = await bound_id(gateway)
    sse = await gateway.get("/sse?pause=0", headers={"X-PowerMem-Instance": instance_id})
    failed = await gateway.get("/fail", headers={"X-PowerMem-Instance": instance_id})
    assert sse.headers["X-PowerMem-Instance"] == instance_id
    assert failed.status == 500 and failed.headers["X-PowerMem-Instance"] == instance_id


async def test_redirects_are_passed_back_not_followed(gateway: Client, recorder: Recorder) -> None:
    """A 302 from powermem reaches the client as a 302 with its Location."""
    response = await gateway.get("/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"
    assert recorder.requests == []


async def test_unreachable_upstream_is_502(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """With nothing listening upstream, the client gets 502 in the envelope, with the id."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(upstream=f"http://127.0.0.1:{free_port()}")))
    )
    plain = await client.get("/api/v1/memories")
    bound = await client.get("/api/v1/memories", headers=LLM_HEADERS)
    for response in (plain, bound):
        body = await response.json()
        assert response.status == 502
        assert body["success"] is False
        assert body["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert "powermem" in body["error"]["message"]
    assert bound.headers["X-PowerMem-Instance"].startswith("pmem-")


async def test_slow_upstream_is_504(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """When powermem does not answer within the upstream timeout, the client gets 504."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(upstream_timeout=0.5)))
    )
    loop = asyncio.get_running_loop()
    start = loop.time()
    response = await client.get("/slow?seconds=5")
    body = await response.json()
    assert loop.time() - start < 3
    assert response.status == 504
    assert body["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert "0.5s" in body["error"]["message"]
