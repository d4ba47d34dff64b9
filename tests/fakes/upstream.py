"""A small stand-in for powermem that records what the gateway forwards to it."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Seen:
    method: str
    path_qs: str
    # Case-insensitive, as header names are: what a server sees, whatever case was sent.
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Recorder:
    requests: list[Seen] = field(default_factory=list)

    @property
    def last(self) -> Seen:
        return self.requests[-1]


RECORDER = web.AppKey("recorder", Recorder)
# `/sse-gated` sends its next event only after the test puts something on this queue.
SSE_GATE = web.AppKey("sse_gate", asyncio.Queue)


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[RECORDER].requests.append(
        Seen(request.method, request.raw_path, CIMultiDict(request.headers), body)
    )
    payload: dict[str, Any] = {
        "success": True,
        "data": {
            "method": request.method,
            "path_qs": request.raw_path,
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_len": len(body),
        },
    }
    return web.json_response(payload, headers={"X-Upstream": "fake"})


async def _sse(request: web.Request) -> web.StreamResponse:
    """Three events, each after a pause the test can observe."""
    request.app[RECORDER].requests.append(
        Seen(request.method, request.raw_path, CIMultiDict(request.headers), b"")
    )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for n in range(3):
        await response.write(f"event: tick\ndata: {n}\n\n".encode())
        await asyncio.sleep(float(request.query.get("pause", "0.3")))
    await response.write_eof()
    return response


async def _big(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", str(8 * 1024 * 1024)))
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    chunk = b"x" * 65536
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "5")))
    return web.json_response({"slow": True})


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")


async def _sse_gated(request: web.Request) -> web.StreamResponse:
    """Three events; each one after the first waits for the test to open the gate."""
    request.app[RECORDER].requests.append(
        Seen(request.method, request.raw_path, CIMultiDict(request.headers), b"")
    )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    for n in range(3):
        if n:
            await request.app[SSE_GATE].get()
        await response.write(f"event: tick\ndata: {n}\n\n".encode())
    await response.write_eof()
    return response


async def _fail(request: web.Request) -> web.Response:
    """Answer with the status in `?status=` (default 500), recorded like the echo."""
    request.app[RECORDER].requests.append(
        Seen(request.method, request.raw_path, CIMultiDict(request.headers), await request.read())
    )
    status = int(request.query.get("status", "500"))
    return web.json_response({"success": False, "status": status}, status=status)


async def _hop(request: web.Request) -> web.Response:
    """A response carrying hop-by-hop headers a proxy must not pass on."""
    return web.Response(
        text="hop",
        headers={
            "Connection": "X-Hop-Listed",
            "X-Hop-Listed": "drop me",
            "Keep-Alive": "timeout=5",
            "Proxy-Authenticate": 'Basic realm="upstream"',
            "X-End-To-End": "keep me",
        },
    )


async def _call_llm(request: web.Request) -> web.Response:
    """What powermem does for an LLM route: call the gateway's relay (found through
    `X-Forwarded-Host`, or `X-Relay-Host` when a test aims at another replica, as a load
    balancer in front of several would) carrying the request's baggage, with the relay token
    the test sent in `X-Relay-Token`; answers 200 with the relay's status and body."""
    body = await request.read()
    request.app[RECORDER].requests.append(
        Seen(request.method, request.raw_path, CIMultiDict(request.headers), body)
    )
    headers = {"Authorization": f"Bearer {request.headers.get('X-Relay-Token', '')}"}
    if "baggage" in request.headers:
        headers["baggage"] = request.headers["baggage"]
    chat = {"model": "relay-model", "messages": [{"role": "user", "content": "extract facts"}]}
    host = request.headers.get("X-Relay-Host") or request.headers["X-Forwarded-Host"]
    url = f"http://{host}/relay/v1/chat/completions"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=chat, headers=headers) as answer,
    ):
        text = await answer.text()
        return web.json_response({"relay_status": answer.status, "relay_body": text})


def make_upstream() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECORDER] = Recorder()
    app.router.add_get("/sse", _sse)
    app.router.add_get("/big", _big)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/redirect", _redirect)
    app[SSE_GATE] = asyncio.Queue()
    app.router.add_get("/sse-gated", _sse_gated)
    app.router.add_route("*", "/fail", _fail)
    app.router.add_get("/hop", _hop)
    app.router.add_post("/call-llm", _call_llm)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app
