"""Instance-scoped base URLs, `/i/<instance>[~<secret>]/…`, for tools whose only knob is a URL:
bound like `X-PowerMem-Instance` on every route, the prefix stripped on the way to powermem and
put back into `Location`, an unknown or deleted instance a clear 404 and never a fallback, and
on a shared gateway the secret required (and never written anywhere)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import BadRequest
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.model import InstanceConfig
from gateway.settings import Settings
from tests.binding import instance_of
from tests.fakes.raw_upstream import RawConn, RawUpstream
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer
from tests.rawhttp import raw

Client = TestClient[web.Request, web.Application]
KEY = "sk-scoped-0123456789abcdef"
CONFIG = {"provider": "openai", "model": "gpt-4o", "api_key": KEY, "client": "claude-code"}
UNKNOWN = "pmem-0123456789abcdef"


async def registered(client: Client) -> str:
    record, _ = await client.server.app[REGISTRY].resolve(
        InstanceConfig.parse(**CONFIG), source="test", implicit=False
    )
    return record.instance_id


def error_code(body: dict[str, Any]) -> str:
    code: str = body["error"]["code"]
    return code


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/memories?user_id=u1&limit=5"),
        ("POST", "/api/v1/memories"),
        ("DELETE", "/api/v1/memories/m%2F1"),
        ("POST", "/mcp"),
        ("GET", "/"),
    ],
)
async def test_a_scoped_url_binds_like_the_instance_header_and_is_stripped(
    gateway: Client, recorder: Recorder, method: str, path: str
) -> None:
    """`/i/<id>/<path>` reaches powermem as `<path>` (query and encoding intact) with that
    instance in its baggage, and the answer names the instance."""
    instance_id = await registered(gateway)
    response = await gateway.request(method, f"/i/{instance_id}{path}", json={"text": "hi"})
    assert response.status == 200
    assert response.headers["X-PowerMem-Instance"] == instance_id
    seen = recorder.last
    assert seen.path_qs == path
    assert instance_of(seen.headers["baggage"]) == instance_id
    assert not any(k.lower().startswith("x-powermem") for k in seen.headers)


async def test_a_scoped_event_stream_streams(gateway: Client, recorder: Recorder) -> None:
    """A scoped event stream arrives event by event, bound to its instance."""
    instance_id = await registered(gateway)
    response = await gateway.get(f"/i/{instance_id}/sse?pause=0")
    assert response.headers["X-PowerMem-Instance"] == instance_id
    assert await response.read() == b"".join(b"event: tick\ndata: %d\n\n" % n for n in range(3))
    assert instance_of(recorder.last.headers["baggage"]) == instance_id


async def test_a_redirect_stays_inside_the_scope(gateway: Client) -> None:
    """powermem's relative `Location` comes back with the scope in front of it."""
    instance_id = await registered(gateway)
    response = await gateway.get(f"/i/{instance_id}/redirect", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == f"/i/{instance_id}/elsewhere"


async def test_an_absolute_self_reference_stays_inside_the_scope(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """powermem's absolute `Location` to itself (as uvicorn writes for `/mcp/` → `/mcp`,
    from the Host it was sent) keeps the scope; one to another host is left alone."""

    async def behaviour(conn: RawConn) -> None:
        while (request := await conn.request()) is not None:
            if request.target == "/mcp/":
                where = f"http://{request.headers['host']}/mcp"
            else:
                where = "http://elsewhere.example/x"
            await conn.send(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {where}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )

    async with RawUpstream(behaviour) as server:
        client: Client = await aiohttp_client(
            GatewayTestServer(create_app(make_settings(upstream=server.url)))
        )
        instance_id = await registered(client)
        port = client.server.port
        ours = await client.get(f"/i/{instance_id}/mcp/", allow_redirects=False)
        assert ours.headers["Location"] == f"http://127.0.0.1:{port}/i/{instance_id}/mcp"
        theirs = await client.get(f"/i/{instance_id}/other", allow_redirects=False)
        assert theirs.headers["Location"] == "http://elsewhere.example/x"


@pytest.mark.parametrize(
    "path", ["/api/v1/memories", "/mcp", "/gateway/health", "/api/v1/instances"]
)
async def test_an_unknown_or_deleted_scope_is_a_404_on_every_route(
    gateway: Client, recorder: Recorder, path: str
) -> None:
    """A scoped URL naming no instance (never registered, or deleted since) is a 404 in the
    envelope on every route, the gateway's own included: never served as if unscoped."""
    instance_id = await registered(gateway)
    await gateway.server.app[REGISTRY].delete(instance_id, source="test")
    for scope in (UNKNOWN, instance_id):
        response = await gateway.get(f"/i/{scope}{path}")
        body = await response.json()
        assert response.status == 404, body
        assert error_code(body) == "INSTANCE_NOT_FOUND"
        assert scope in body["error"]["message"]
    assert recorder.requests == []


@pytest.mark.parametrize(
    "path, code",
    [
        ("/i/bad$id/api/v1/memories", "INVALID_HEADER"),
        ("/i//api/v1/memories", BadRequest.code),
        ("/I/" + UNKNOWN + "/api/v1/memories", BadRequest.code),
        ("//i/" + UNKNOWN + "/api/v1/memories", BadRequest.code),
        ("/%69/" + UNKNOWN + "/api/v1/memories", BadRequest.code),
        ("/x/../i/" + UNKNOWN + "/api/v1/memories", BadRequest.code),
    ],
)
async def test_a_scope_not_written_plainly_is_refused(
    gateway: Client, recorder: Recorder, path: str, code: str
) -> None:
    """A malformed scope, or one spelt so that only some servers would read it as a scope, is
    a 400 (never forwarded as a path of powermem's, never unscoped)."""
    async with raw(gateway.server.port) as client:
        await client.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        answer = await client.final()
    assert answer.status == 400
    assert error_code(json.loads(answer.body)) == code
    assert recorder.requests == []


async def test_a_scope_and_a_different_instance_header_are_refused(
    gateway: Client, recorder: Recorder
) -> None:
    """A scoped URL and an `X-PowerMem-Instance` naming another instance: 400, not a guess."""
    instance_id = await registered(gateway)
    response = await gateway.get(
        f"/i/{instance_id}/api/v1/memories", headers={"X-PowerMem-Instance": UNKNOWN}
    )
    assert response.status == 400
    assert recorder.requests == []


# -- a shared gateway: the id alone is not enough ------------------------------------------------


@pytest.fixture
async def shared(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> Client:
    client: Client = await aiohttp_client(GatewayTestServer(create_app(make_settings(shared=True))))
    return client


async def with_secret(client: Client) -> tuple[str, str]:
    """Register over the API as a tool would: the secret comes back in that answer only."""
    first = await client.post("/api/v1/instances", json=CONFIG)
    assert first.status == 201
    data = (await first.json())["data"]
    again = await client.post("/api/v1/instances", json=CONFIG)
    assert again.status == 200
    assert (await again.json())["data"].get("secret") is None
    secret: str = data["secret"]
    return data["instance_id"], secret


@pytest.mark.parametrize("path", ["/api/v1/memories", "/gateway/health"])
async def test_on_a_shared_gateway_a_scope_needs_its_secret(
    shared: Client, recorder: Recorder, path: str
) -> None:
    """On a shared gateway `/i/<id>/…` alone, or with a wrong secret, is a 401 on every
    route; `/i/<id>~<secret>/…` or the secret header binds."""
    instance_id, secret = await with_secret(shared)
    for url in (f"/i/{instance_id}{path}", f"/i/{instance_id}~{secret[:-2]}xx{path}"):
        response = await shared.get(url)
        assert response.status == 401
        assert error_code(await response.json()) == "INSTANCE_SECRET_REQUIRED"
    assert recorder.requests == []
    scoped = await shared.get(f"/i/{instance_id}~{secret}{path}")
    assert scoped.status == 200
    header = await shared.get(
        f"/i/{instance_id}{path}", headers={"X-PowerMem-Instance-Secret": secret}
    )
    assert header.status == 200


async def test_the_secret_is_never_forwarded_or_logged(
    shared: Client, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """The secret in a scoped URL or header reaches neither powermem (path, headers) nor the
    access log."""
    caplog.set_level(logging.INFO)
    instance_id, secret = await with_secret(shared)
    response = await shared.get(f"/i/{instance_id}~{secret}/api/v1/memories?x=1")
    assert response.status == 200
    assert (await response.json())["data"]["path_qs"] == "/api/v1/memories?x=1"
    header = await shared.get(
        "/api/v1/memories",
        headers={"X-PowerMem-Instance": instance_id, "X-PowerMem-Instance-Secret": secret},
    )
    assert header.status == 200
    for seen in recorder.requests:
        assert secret not in seen.path_qs
        assert secret not in json.dumps(dict(seen.headers))
    logged = "\n".join(
        f"{r.getMessage()} {json.dumps(vars(r), default=str)}" for r in caplog.records
    )
    assert instance_id in logged  # the access lines are there, the secret is not
    assert secret not in logged


async def test_implicit_instances_bind_by_headers_alone_on_a_shared_gateway(
    shared: Client, recorder: Recorder
) -> None:
    """On a shared gateway the LLM headers still bind by themselves (the key is the proof)."""
    response = await shared.get(
        "/api/v1/memories",
        headers={
            "X-PowerMem-LLM-Provider": "openai",
            "X-PowerMem-LLM-Model": "gpt-4o",
            "X-PowerMem-LLM-Api-Key": KEY,
        },
    )
    assert response.status == 200
    assert instance_of(recorder.last.headers["baggage"]) == response.headers["X-PowerMem-Instance"]
