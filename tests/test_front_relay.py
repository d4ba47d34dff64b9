"""The relay from outside: only LLM calls of requests the gateway forwarded may spend an
instance (forged, copied, stale and cross-instance nonces are refused before any provider is
called), a provider echoing the instance's key never gets it back to the caller, and a proxied
request whose LLM calls failed says so in `X-PowerMem-LLM-Error` and in the instance's usage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.sqlite_store import DB_FILE
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import free_port
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
RELAY_TOKEN = "pgr-front-relay-token-0123456789"
AUTH = {"Authorization": f"Bearer {RELAY_TOKEN}"}
DEFAULT_KEY = "sk-front-default-0123456789abcdef"
KEY_A = "sk-front-instance-a-0123456789abcdef"
KEY_B = "sk-front-instance-b-0123456789abcdef"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "extract facts"}]}
RELAY = "/relay/v1/chat/completions"


@pytest.fixture
async def default_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def relay_settings(
    make_settings: Callable[..., Settings], default_fake: FakeOpenAI, tmp_path: Path
) -> Callable[..., Settings]:
    env_file = tmp_path / "powermem.env"
    env_file.write_text(
        f"LLM_PROVIDER=openai\nLLM_API_KEY={DEFAULT_KEY}\nLLM_MODEL=default-model\n"
        f"OPENAI_LLM_BASE_URL={default_fake.url}\n"
    )

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env_file": env_file,
            "relay_token": RELAY_TOKEN,
            "provider_retries": 0,
            "provider_timeout": 2.0,
        }
        return make_settings(**{**values, **overrides})

    return make


@pytest.fixture
async def gw(aiohttp_client: Any, relay_settings: Callable[..., Settings]) -> Client:
    client: Client = await aiohttp_client(GatewayTestServer(create_app(relay_settings())))
    return client


async def register(client: Client, base_url: str, key: str, provider: str = "openai") -> str:
    body = {"provider": provider, "model": "instance-model", "api_key": key, "base_url": base_url}
    response = await client.post("/api/v1/instances", json=body)
    assert response.status in (200, 201), await response.text()
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


def openai_error(body: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "code"} <= set(error), body
    return error


# -- nonces --------------------------------------------------------------------------------------


async def refused(client: Client, baggage: str) -> None:
    response = await client.post(RELAY, json=CHAT, headers={**AUTH, "baggage": baggage})
    body = await response.json()
    assert response.status == 403, body
    assert openai_error(body)["code"] == "relay_call_refused"


async def test_forged_nonces_are_refused_and_call_no_provider(
    gw: Client, provider: FakeOpenAI, default_fake: FakeOpenAI
) -> None:
    """Baggage naming an instance with a made-up nonce (our shape or not), or with none, is
    refused in OpenAI's shape; no provider, the instance's or the default, is called."""
    a = await register(gw, provider.url, KEY_A)
    for nonce in (
        f"0-0-{secrets.token_hex(16)}",
        f"0-fff-{secrets.token_hex(16)}",
        f"7-0-{secrets.token_hex(16)}",
        "not-a-nonce",
        "0-0-" + "0" * 32,
        "",
    ):
        await refused(gw, f"powermem.instance={a},powermem.nonce={nonce}")
    await refused(gw, f"powermem.instance={a}")
    assert provider.calls == [] and default_fake.calls == []


async def test_a_finished_requests_nonce_is_stale(
    gw: Client, recorder: Recorder, provider: FakeOpenAI
) -> None:
    """The baggage powermem received for a request that has since been answered no longer
    spends the instance (copied from a log, replayed later)."""
    a = await register(gw, provider.url, KEY_A)
    response = await gw.get("/api/v1/memories", headers={"X-PowerMem-Instance": a})
    assert response.status == 200
    await refused(gw, recorder.last.headers["baggage"])
    assert provider.calls == []


async def test_a_nonce_spends_only_the_instance_it_was_issued_for(
    gw: Client, provider: FakeOpenAI, default_fake: FakeOpenAI
) -> None:
    """A nonce in flight for instance A cannot spend B, nor A with its instance member
    dropped; an unbound request's nonce cannot be given an instance."""
    a = await register(gw, provider.url, KEY_A)
    b = await register(gw, provider.url, KEY_B)
    app = gw.server.app
    for_a = in_flight(app, a)
    nonce_a = for_a.split("powermem.nonce=")[1]
    await refused(gw, f"powermem.instance={b},powermem.nonce={nonce_a}")
    await refused(gw, f"powermem.nonce={nonce_a}")
    unbound = in_flight(app, None).split("powermem.nonce=")[1]
    await refused(gw, f"powermem.instance={a},powermem.nonce={unbound}")
    # Two nonces or two instances: neither may be picked by whoever wrote the header.
    await refused(gw, f"powermem.instance={a},powermem.instance={b},powermem.nonce={nonce_a}")
    assert provider.calls == [] and default_fake.calls == []
    # The genuine pair still works, and spends A's key.
    ok = await gw.post(RELAY, json=CHAT, headers={**AUTH, "baggage": for_a})
    assert ok.status == 200
    (call,) = provider.calls
    assert call["authorization"] == f"Bearer {KEY_A}"


async def test_in_external_mode_a_call_without_baggage_uses_the_default_llm(
    gw: Client, default_fake: FakeOpenAI
) -> None:
    """Fronting an external powermem (whose own LLM calls may come with no baggage), a call
    without our members gets the `.env`'s LLM; only its key is spent."""
    for headers in (AUTH, {**AUTH, "baggage": "other=1,tenant=x"}):
        response = await gw.post(RELAY, json=CHAT, headers=headers)
        assert response.status == 200
    assert [c["authorization"] for c in default_fake.calls] == [f"Bearer {DEFAULT_KEY}"] * 2


# -- a provider that echoes the key --------------------------------------------------------------


def echo_provider(kind: str) -> web.Application:
    """A provider (a debugging proxy, a misconfigured gateway) that answers with what it got,
    its Authorization header included; streamed answers put the key across two writes."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = request.headers.get("Authorization", request.headers.get("x-api-key", ""))
        key = key.removeprefix("Bearer ")
        text = f"you sent {key} to me"
        if kind == "anthropic":
            return await _anthropic_echo(request, body, text, key)
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            return web.json_response(
                {"object": "chat.completion", "choices": [choice], "echo": dict(request.headers)}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = json.dumps(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text}}],
            }
        ).encode()
        cut = event.index(key.encode()) + len(key) // 2
        await response.write(b"data: " + event[:cut])
        await asyncio.sleep(0.05)  # two network writes: the key is split between them
        await response.write(event[cut:] + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/messages", handle)
    return app


async def _anthropic_echo(
    request: web.Request, body: dict[str, Any], text: str, key: str
) -> web.StreamResponse:
    message = {
        "id": "msg_echo",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    if not body.get("stream"):
        return web.json_response(message)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    start = {**message, "content": []}
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("content_block_delta", delta),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 1},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    wire = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    cut = wire.index(key.encode()) + len(key) // 2
    await response.write(wire[:cut])
    await asyncio.sleep(0.05)
    await response.write(wire[cut:])
    await response.write_eof()
    return response


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_key_echoed_by_the_provider_never_reaches_the_caller(
    gw: Client, aiohttp_server: Any, kind: str, stream: bool
) -> None:
    """The instance's key echoed in a 2xx body, or in a stream with the key split across two
    network writes, reaches powermem as [redacted], the rest of the answer intact."""
    server: TestServer = await aiohttp_server(echo_provider(kind))
    base = str(server.make_url("/v1" if kind == "openai" else "")).rstrip("/")
    instance = await register(gw, base, KEY_A, provider=kind)
    headers = {**AUTH, "baggage": in_flight(gw.server.app, instance)}
    response = await gw.post(RELAY, json={**CHAT, "stream": stream}, headers=headers)
    assert response.status == 200
    raw = await response.read()
    assert KEY_A.encode() not in raw
    assert KEY_A[:12].encode() not in raw and KEY_A[-12:].encode() not in raw
    assert b"you sent [redacted] to me" in raw
    if stream:
        assert raw.rstrip().endswith(b"data: [DONE]")


async def test_a_key_echoed_in_a_provider_error_never_reaches_the_caller(
    gw: Client, aiohttp_server: Any
) -> None:
    """A provider's error message that repeats the key is passed on without it."""

    async def refuse(request: web.Request) -> web.Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        error = {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=401)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    server: TestServer = await aiohttp_server(app)
    instance = await register(gw, str(server.make_url("/v1")), KEY_A)
    headers = {**AUTH, "baggage": in_flight(gw.server.app, instance)}
    response = await gw.post(RELAY, json=CHAT, headers=headers)
    raw = await response.read()
    assert response.status == 401
    assert KEY_A.encode() not in raw and b"[redacted]" in raw


# -- X-PowerMem-LLM-Error ------------------------------------------------------------------------


async def call_llm(client: Client, **headers: str) -> Any:
    return await client.post(
        "/call-llm", json={}, headers={"X-Relay-Token": RELAY_TOKEN, **headers}
    )


@pytest.mark.parametrize(
    "status, reason", [(401, "unauthorized"), (429, "rate-limited"), (500, "provider-error")]
)
async def test_a_request_whose_llm_call_failed_says_so_and_counts_it(
    gw: Client, provider: FakeOpenAI, status: int, reason: str
) -> None:
    """powermem's LLM call for a proxied request fails at the provider: the answer powermem
    gives carries `X-PowerMem-LLM-Error: <status> <reason>` (no secret, no provider text),
    and the instance's usage counts it with the same reason."""
    instance = await register(gw, provider.url, KEY_A)
    provider.fail(status, times=5)
    response = await call_llm(gw, **{"X-PowerMem-Instance": instance})
    assert response.status == 200  # powermem swallows it, as it does
    assert (await response.json())["relay_status"] == status
    assert response.headers["X-PowerMem-LLM-Error"] == f"{status} {reason}"
    assert response.headers["X-PowerMem-Instance"] == instance
    usage = await gw.server.app[REGISTRY].usage(instance)
    assert usage["llm_errors"] == 1
    assert usage["last_llm_error"]["status"] == status
    assert reason in usage["last_llm_error"]["reason"]
    assert KEY_A not in json.dumps(usage)


async def test_an_unreachable_provider_and_a_scoped_url_say_so_too(gw: Client) -> None:
    """A provider nobody listens at fails as `502 unreachable`, reported through a scoped URL
    like through the header."""
    instance = await register(gw, f"http://127.0.0.1:{free_port()}/v1", KEY_A)
    response = await gw.post(
        f"/i/{instance}/call-llm", json={}, headers={"X-Relay-Token": RELAY_TOKEN}
    )
    assert response.headers["X-PowerMem-LLM-Error"] == "502 unreachable"


async def test_a_request_whose_llm_calls_worked_carries_no_error(
    gw: Client, provider: FakeOpenAI
) -> None:
    """No failure, no header; and a request bound to no instance never gets one."""
    instance = await register(gw, provider.url, KEY_A)
    bound = await call_llm(gw, **{"X-PowerMem-Instance": instance})
    assert (await bound.json())["relay_status"] == 200
    assert "X-PowerMem-LLM-Error" not in bound.headers
    assert (await gw.server.app[REGISTRY].usage(instance))["llm_errors"] == 0


async def test_an_anthropic_instance_with_a_wrong_key_is_reported(gw: Client) -> None:
    """An Anthropic instance whose key the provider refuses: `401 unauthorized` too."""
    async with FakeAnthropic() as fake:
        fake.fail(401, times=5)
        instance = await register(gw, fake.url, KEY_B, provider="anthropic")
        response = await call_llm(gw, **{"X-PowerMem-Instance": instance})
        assert response.headers["X-PowerMem-LLM-Error"] == "401 unauthorized"


# -- a provider that never ends its event --------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_stream_whose_event_never_ends_is_cut_not_buffered(
    gw: Client, aiohttp_server: Any, kind: str
) -> None:
    """A provider (a base URL anyone may register) that streams one endless event, never a
    blank line, is cut once the event passes a bound: the gateway does not hold an unbounded
    event in memory, and the caller's stream ends without [DONE]."""
    sent = [0]
    total = 48 * 1024 * 1024

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        piece = b"a" * 65536
        try:
            await response.write(b"data: ")
            while sent[0] < total:
                await response.write(piece)
                sent[0] += len(piece)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", endless)
    app.router.add_post("/v1/messages", endless)
    server: TestServer = await aiohttp_server(app)
    base = str(server.make_url("/v1" if kind == "openai" else "")).rstrip("/")
    instance = await register(gw, base, KEY_A, provider=kind)
    headers = {**AUTH, "baggage": in_flight(gw.server.app, instance)}
    response = await gw.post(RELAY, json={**CHAT, "stream": True}, headers=headers)
    assert response.status == 200
    received = b""
    with contextlib.suppress(aiohttp.ClientPayloadError):
        async for chunk in response.content.iter_any():
            received += chunk
    assert b"[DONE]" not in received
    assert sent[0] < total // 2, f"the provider sent {sent[0]} bytes of one event"


# -- failures before any provider is called ------------------------------------------------------


async def test_an_instance_whose_key_cannot_be_opened_says_so(
    aiohttp_client: Any, relay_settings: Callable[..., Settings], provider: FakeOpenAI
) -> None:
    """A row edited on disk (its key no longer opens) fails the request's LLM calls before any
    provider is called: the caller still learns it, as `409 key-unreadable`, and usage counts it."""
    first: Client = await aiohttp_client(GatewayTestServer(create_app(relay_settings())))
    instance = await register(first, provider.url, KEY_A)
    await first.close()
    settings = relay_settings()
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    with db:
        db.execute(
            "UPDATE instances SET base_url = ? WHERE instance_id = ?",
            (provider.url + "/elsewhere", instance),
        )
    db.close()
    second: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    response = await call_llm(second, **{"X-PowerMem-Instance": instance})
    assert (await response.json())["relay_status"] == 409
    assert response.headers["X-PowerMem-LLM-Error"] == "409 key-unreadable"
    usage = await second.server.app[REGISTRY].usage(instance)
    assert usage["llm_errors"] == 1 and usage["last_llm_error"]["status"] == 409
    assert provider.calls == []


async def test_a_provider_address_refused_by_policy_is_reported_as_refused(
    aiohttp_client: Any, relay_settings: Callable[..., Settings], provider: FakeOpenAI
) -> None:
    """A base URL on a private address, registered while that was allowed, then refused by
    the policy at call time: reported as `403 refused`, not as an unreachable provider."""
    first: Client = await aiohttp_client(GatewayTestServer(create_app(relay_settings())))
    instance = await register(first, provider.url, KEY_A)
    await first.close()
    strict = relay_settings(allow_private_base_urls=False)
    second: Client = await aiohttp_client(GatewayTestServer(create_app(strict)))
    response = await call_llm(second, **{"X-PowerMem-Instance": instance})
    assert (await response.json())["relay_status"] == 403
    assert response.headers["X-PowerMem-LLM-Error"] == "403 refused"
    assert provider.calls == []
