"""The front door from outside: Host names (DNS rebinding), browsers' cross-origin requests and
preflights, every spelling of the gateway's own paths, and the `X-PowerMem-*` header rules,
on every kind of path (the gateway's own routes, the relay, the proxy to powermem)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import BadRequest
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer
from tests.rawhttp import RawResponse, raw

Client = TestClient[web.Request, web.Application]
KEY = "sk-door-registration-0123456789abcdef"
REGISTRATION = json.dumps({"provider": "openai", "model": "gpt-4o", "api_key": KEY}).encode()
# One path of each kind: the gateway's own routes, the relay, the proxy to powermem.
PATHS = ["/api/v1/instances", "/relay/v1/chat/completions", "/api/v1/memories"]
ALLOWED_ORIGIN = "https://app.example"


async def send(port: int, head: bytes, body: bytes = b"") -> RawResponse:
    """One request as raw bytes (`head` without its blank line); the answer."""
    async with raw(port) as client:
        if body:
            head += b"Content-Length: %d\r\n" % len(body)
        await client.send(head + b"\r\n" + body)
        return await client.final()


def error_code(answer: RawResponse) -> str:
    body = json.loads(answer.body)
    code: str = body["error"]["code"]
    return code


# -- Host ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "hosts, status",
    [
        ([b"attacker.example"], 421),
        ([b"attacker.example:%d"], 421),
        ([b"localhost.evil.com"], 421),
        ([b"127.0.0.1.nip.io"], 421),
        ([b""], 421),
        ([b"localhost", b"attacker.example"], 400),
        ([b"localhost", b"localhost"], 400),
        ([], 400),
    ],
    ids=[
        "rebinding name",
        "with our port",
        "localhost.evil.com",
        "nip.io",
        "empty",
        "two",
        "twice",
        "none",
    ],
)
async def test_a_host_we_are_not_is_refused_on_every_path(
    gateway: Client, recorder: Recorder, path: str, hosts: list[bytes], status: int
) -> None:
    """A page that rebinds its DNS name to 127.0.0.1 (or any name but ours, or none, or two)
    is refused before any route runs: nothing registered, relayed or forwarded."""
    port = gateway.server.port
    head = b"POST " + path.encode() + b" HTTP/1.1\r\n"
    head += b"".join(b"Host: " + (h % port if b"%d" in h else h) + b"\r\n" for h in hosts)
    head += b"Content-Type: application/json\r\n"
    answer = await send(port, head, REGISTRATION)
    assert answer.status == status
    assert error_code(answer) == ("HOST_REFUSED" if status == 421 else BadRequest.code)
    assert recorder.requests == []
    assert await gateway.server.app[REGISTRY].list() == []


@pytest.fixture
async def door_gateway(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> Client:
    settings = make_settings(allowed_hosts=("gw.internal",), allowed_origins=(ALLOWED_ORIGIN,))
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    return client


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "name",
    [
        b"localhost",
        b"localhost:%d",
        b"127.0.0.1:%d",
        b"[::1]:%d",
        b"gw.internal",
        b"GW.Internal:80",
    ],
)
async def test_our_own_names_are_let_in_on_every_path(
    door_gateway: Client, path: str, name: bytes
) -> None:
    """Loopback names and addresses (with or without our port) and an `--allowed-host` reach
    every kind of route."""
    port = door_gateway.server.port
    host = name % port if b"%d" in name else name
    answer = await send(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n")
    # Each reached its own handler: the management API (which wants the admin token to
    # list), the relay (which takes POST only), powermem.
    expected = {"/api/v1/instances": (200, 401), "/relay/v1/chat/completions": (405,)}
    assert answer.status in expected.get(path, (200,))


# -- Origin and CORS -----------------------------------------------------------------------------


SEEN = web.AppKey("seen", list)


async def _cors_powermem(request: web.Request) -> web.Response:
    """powermem's CORS as it ships: a wildcard with credentials, preflights answered."""
    request.app[SEEN].append((request.method, request.path))
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "*",
        "Access-Control-Allow-Headers": "*",
    }
    body = {"method": request.method, "path": request.path}
    return web.json_response(body, headers=headers)


@pytest.fixture
async def cors_upstream(aiohttp_server: Any) -> TestServer:
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", _cors_powermem)
    server: TestServer = await aiohttp_server(app)
    return server


@pytest.fixture
async def cors_gateway(
    aiohttp_client: Any, make_settings: Callable[..., Settings], cors_upstream: TestServer
) -> Client:
    settings = make_settings(
        upstream=str(cors_upstream.make_url("")).rstrip("/"), allowed_origins=(ALLOWED_ORIGIN,)
    )
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    return client


def cors_headers(answer: RawResponse) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in answer.headers:
        if key.startswith(b"access-control-"):
            found.setdefault(key.decode(), []).append(value.decode())
    return found


@pytest.mark.parametrize("path", ["/api/v1/memories", "/gateway/health"])
async def test_powermem_wildcard_cors_never_reaches_a_browser(
    cors_gateway: Client, path: str
) -> None:
    """Without an Origin, or from the same origin, no Access-Control-* header reaches the
    client: powermem's `*` with credentials is removed."""
    port = cors_gateway.server.port
    for origin in (b"", b"Origin: http://127.0.0.1:%d\r\n" % port):
        answer = await send(
            port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port + origin
        )
        assert answer.status == 200
        assert cors_headers(answer) == {}


@pytest.mark.parametrize("path", [*PATHS, "/gateway/health"])
async def test_an_allowed_origin_gets_our_cors_and_nothing_of_powermems(
    cors_gateway: Client, path: str
) -> None:
    """A cross-origin request from an `--allowed-origin` is answered with that origin alone
    (never `*`, never credentials), our headers exposed and `Vary: Origin`."""
    port = cors_gateway.server.port
    answer = await send(
        port,
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Origin: "
        + ALLOWED_ORIGIN.encode()
        + b"\r\n",
    )
    assert answer.status < 500
    cors = cors_headers(answer)
    assert cors["access-control-allow-origin"] == [ALLOWED_ORIGIN]
    assert "X-PowerMem-Instance" in cors["access-control-expose-headers"][0]
    assert "access-control-allow-credentials" not in cors
    assert "Origin" in answer.all("vary")


@pytest.mark.parametrize("path", [*PATHS, "/gateway/health"])
@pytest.mark.parametrize(
    "origin", [b"https://evil.example", b"null", b"http://localhost:1", b"https://app.example.evil"]
)
async def test_a_foreign_origin_is_refused_on_every_path(
    cors_gateway: Client, path: str, origin: bytes
) -> None:
    """A cross-origin request from anywhere else (an opaque `null` origin too) is a 403 that
    forwards nothing and carries no Access-Control-* header."""
    port = cors_gateway.server.port
    answer = await send(
        port,
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
        + b"Origin: "
        + origin
        + b"\r\nContent-Type: text/plain\r\n",
        REGISTRATION,
    )
    assert answer.status == 403
    assert error_code(answer) == "ORIGIN_REFUSED"
    assert cors_headers(answer) == {}
    assert await cors_gateway.server.app[REGISTRY].list() == []


@pytest.mark.parametrize("path", PATHS)
async def test_preflights_are_answered_here_and_never_reach_powermem(
    cors_gateway: Client, cors_upstream: TestServer, path: str
) -> None:
    """An allowed origin's preflight gets our 204 (its origin, our methods, the headers it
    asked for); a foreign origin's gets a 403; powermem sees neither."""
    port = cors_gateway.server.port
    head = b"OPTIONS " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
    head += b"Access-Control-Request-Method: POST\r\n"
    head += b"Access-Control-Request-Headers: content-type, x-powermem-instance\r\n"
    allowed = await send(port, head + b"Origin: " + ALLOWED_ORIGIN.encode() + b"\r\n")
    assert allowed.status == 204
    cors = cors_headers(allowed)
    assert cors["access-control-allow-origin"] == [ALLOWED_ORIGIN]
    assert "POST" in cors["access-control-allow-methods"][0]
    assert cors["access-control-allow-headers"] == ["content-type, x-powermem-instance"]
    refused = await send(port, head + b"Origin: https://evil.example\r\n")
    assert refused.status == 403 and cors_headers(refused) == {}
    assert cors_upstream.app[SEEN] == []


# -- every spelling of our own paths -------------------------------------------------------------

INSTANCES_SPELLINGS = [
    "//api/v1/instances",
    "/API/V1/INSTANCES",
    "/Api/v1/Instances",
    "/api/v1/instances;x",
    "/api/v1;x/instances",
    "/api/v1/instances%3Bx",
    "/api%2Fv1%2Finstances",
    "/api%2fv1%2finstances",
    "/api%252Fv1%252Finstances",
    "/api%25252Fv1/instances",
    "/%61pi/v1/instances",
    "/api/v1/./instances",
    "/./api/v1/instances",
    "/api/v1/x/../instances",
    "/api/v1/instances/%2e%2e/instances",
    "/x/..%2Fapi/v1/instances",
    "/api//v1//instances",
    "/api\\v1\\instances",
    "/api/v1/instances%2F",
    "/api/v1/instances#fragment",
    "/api/v1/instances?x=1",
]


@pytest.mark.parametrize("path", INSTANCES_SPELLINGS)
async def test_every_spelling_of_the_registration_path_reaches_our_handler(
    gateway: Client, recorder: Recorder, path: str
) -> None:
    """A registration (provider key in the body) sent to any spelling an origin server could
    read as `/api/v1/instances` is handled by the gateway and never forwarded to powermem."""
    port = gateway.server.port
    answer = await send(
        port,
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\n",
        REGISTRATION,
    )
    assert recorder.requests == [], f"{path} was forwarded to powermem"
    assert answer.status in (200, 201, 400), answer.body
    if answer.status != 400:
        assert json.loads(answer.body)["data"]["instance_id"].startswith("pmem-")
    assert KEY.encode() not in answer.body


async def test_a_trailing_slash_is_ours_and_not_found(gateway: Client, recorder: Recorder) -> None:
    """`/api/v1/instances/` is the gateway's (a 404 in the envelope), never powermem's."""
    answer = await send(
        gateway.server.port,
        b"POST /api/v1/instances/ HTTP/1.1\r\nHost: localhost\r\n",
        REGISTRATION,
    )
    assert answer.status == 404 and error_code(answer) == "NOT_FOUND"
    assert recorder.requests == []


RELAY_SPELLINGS = [
    "//relay/v1/chat/completions",
    "/RELAY/v1/chat/completions",
    "/relay/v1/chat/completions;x",
    "/relay%2Fv1%2Fchat%2Fcompletions",
    "/relay%252Fv1/chat/completions",
    "/relay/v1/./chat/completions",
    "/relay/v1/x/../chat/completions",
    "/v1/../relay/v1/chat/completions",
    "/relay/v1/chat/completions#x",
    "/relay/v1/chat/completions/",
]


@pytest.mark.parametrize("path", RELAY_SPELLINGS)
async def test_every_spelling_of_the_relay_reaches_the_relay(
    gateway: Client, recorder: Recorder, path: str
) -> None:
    """Any spelling of the relay is answered by the relay (an OpenAI-shaped error without its
    token; a target with a #fragment is refused before routing), never forwarded to powermem."""
    answer = await send(
        gateway.server.port,
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n",
        b'{"messages": [{"role": "user", "content": "hi"}]}',
    )
    assert recorder.requests == [], f"{path} was forwarded to powermem"
    error = json.loads(answer.body)["error"]
    if "#" in path:
        assert answer.status == 400 and error["code"] == BadRequest.code
    else:
        assert answer.status in (401, 404) and {"message", "type"} <= set(error)


# -- X-PowerMem-* headers ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "name",
    [
        "X-PowerMem-Instance-Id",
        "X_PowerMem_LLM_Api_Key",
        "X-PowerMem-LLM-ApiKey",
        "X-PowerMem_LLM-Model",
        "x-powermem-llm-provider2",
        "X-PowerMem",
        "X-PowerMem-Gateway-Peer",
    ],
)
async def test_an_unknown_powermem_header_is_a_400_naming_it_on_every_path(
    gateway: Client, recorder: Recorder, path: str, name: str
) -> None:
    """An unknown or misspelt `X-PowerMem-*` header (the bridge's peer header too) is a 400
    that names it and lists the real ones; the request goes nowhere."""
    answer = await send(
        gateway.server.port,
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: localhost\r\n"
        + name.encode()
        + b": "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\n",
        REGISTRATION,
    )
    assert answer.status == 400
    error = json.loads(answer.body)["error"]
    assert error["code"] == "INVALID_HEADER"
    assert name.lower() in error["message"].lower()
    assert "X-PowerMem-Instance" in error["message"]
    assert KEY not in answer.body.decode()
    assert recorder.requests == []
    assert await gateway.server.app[REGISTRY].list() == []


async def test_our_header_given_twice_is_refused(gateway: Client, recorder: Recorder) -> None:
    """Two `X-PowerMem-Instance` headers could be read either way: a 400, nothing forwarded."""
    answer = await send(
        gateway.server.port,
        b"GET /api/v1/memories HTTP/1.1\r\nHost: localhost\r\n"
        b"X-PowerMem-Instance: pmem-0123456789abcdef\r\n"
        b"x-powermem-instance: pmem-fedcba9876543210\r\n",
    )
    assert answer.status == 400 and error_code(answer) == "INVALID_HEADER"
    assert recorder.requests == []
