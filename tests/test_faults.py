"""Faults: providers that stall, cut or talk nonsense, an upstream that dies mid-answer, a
registry that cannot be written, a broken instances.yaml, and a soak that must leak nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from tests.binding import in_flight, instance_of
from tests.conftest import OperatorFactory, SpawnGateway
from tests.fakes.providers import FakeOpenAI
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]

RELAY_TOKEN = "pgr-faults-relay-token-0123456789"
RELAY = {"Authorization": f"Bearer {RELAY_TOKEN}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
SSE = {"Content-Type": "text/event-stream"}
OPENAI_CHUNK = (
    b'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
)
ANTHROPIC_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
)

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


def provider_app(behaviour: Behaviour) -> web.Application:
    """A provider whose chat endpoints (OpenAI's and Anthropic's) all behave the same way."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        return await behaviour(request)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/messages", handle)
    return app


async def stream_then(request: web.Request, first: bytes, then: str) -> web.StreamResponse:
    """Send `first`, then stall (`then="stall"`) or drop the connection (`then="cut"`)."""
    response = web.StreamResponse(headers=SSE)
    await response.prepare(request)
    await response.write(first)
    if then == "stall":
        await asyncio.sleep(5)
    elif request.transport is not None:
        request.transport.close()
    return response


@pytest.fixture
async def relay_client(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> AsyncIterator[Client]:
    settings = make_settings(relay_token=RELAY_TOKEN, provider_timeout=0.4, provider_retries=0)
    client: Client = await operator(create_app(settings))
    yield client


async def instance_at(client: Client, server: TestServer, provider: str) -> dict[str, str]:
    """Register an instance served by `server`; the relay headers that select it."""
    base = str(server.make_url("/v1" if provider == "openai" else ""))
    body = {
        "provider": provider,
        "model": "m",
        "api_key": "sk-faults-0123456789ab",
        "base_url": base,
    }
    response = await client.post("/api/v1/instances", json=body)
    assert response.status == 201, await response.text()
    instance_id = (await response.json())["data"]["instance_id"]
    return {**RELAY, "baggage": in_flight(client.server.app, instance_id)}


async def read_stream(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """What arrived of a streamed body, and whether it ended cleanly."""
    received = b""
    try:
        async for chunk in response.content.iter_any():
            received += chunk
    except aiohttp.ClientPayloadError:
        return received, False
    return received, True


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("then", ["stall", "cut"])
async def test_a_stream_that_stalls_or_breaks_reaches_the_caller_cut_without_done(
    relay_client: Client, aiohttp_server: Any, provider: str, then: str
) -> None:
    """Mid-stream stall (past the timeout) or drop: the caller's stream is cut, never [DONE]."""
    first = OPENAI_CHUNK if provider == "openai" else ANTHROPIC_START

    async def behaviour(request: web.Request) -> web.StreamResponse:
        return await stream_then(request, first, then)

    server = await aiohttp_server(provider_app(behaviour))
    headers = await instance_at(relay_client, server, provider)
    response = await relay_client.post(
        "/relay/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers
    )
    assert response.status == 200
    received, clean = await read_stream(response)
    assert not clean
    assert b'"hi"' in received
    assert b"[DONE]" not in received
    # The instance's usage counts the broken call as an error, not as a served answer.
    instance_id = instance_of(headers["baggage"])
    shown = await (await relay_client.get(f"/api/v1/instances/{instance_id}")).json()
    assert shown["data"]["usage"]["relay_calls"] == 1
    assert shown["data"]["usage"]["relay_errors"] == 1


GARBAGE: dict[str, tuple[bytes, str]] = {
    "html page": (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
    "truncated json": (b'{"id": "chatcmpl-1", "choi', "application/json"),
    "json array": (b"[1, 2, 3]", "application/json"),
    "empty body": (b"", "application/json"),
}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
async def test_a_provider_answer_that_is_not_json_becomes_a_clear_502(
    relay_client: Client, aiohttp_server: Any, provider: str, garbage: str
) -> None:
    """A 200 whose body is not a JSON object is reported in OpenAI's error shape, as a 502."""
    body, content_type = GARBAGE[garbage]

    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    server = await aiohttp_server(provider_app(behaviour))
    headers = await instance_at(relay_client, server, provider)
    response = await relay_client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 502
    error = (await response.json())["error"]
    assert "not a JSON object" in error["message"]
    assert error["type"] == "provider_error"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_stream_request_answered_with_json_is_a_clear_502(
    relay_client: Client, aiohttp_server: Any, provider: str
) -> None:
    """Asked to stream, a provider that answers JSON gets an error, not a fake event stream."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": "x", "choices": []})

    server = await aiohttp_server(provider_app(behaviour))
    headers = await instance_at(relay_client, server, provider)
    response = await relay_client.post(
        "/relay/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers
    )
    assert response.status == 502
    assert "instead of an event stream" in (await response.json())["error"]["message"]


async def test_an_anthropic_stream_of_nonsense_ends_with_an_openai_error_chunk(
    relay_client: Client, aiohttp_server: Any
) -> None:
    """Invalid SSE data from Anthropic becomes an OpenAI error event, then [DONE]."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        await response.write(b"event: message_start\ndata: {not json at all\n\n")
        await response.write_eof()
        return response

    server = await aiohttp_server(provider_app(behaviour))
    headers = await instance_at(relay_client, server, "anthropic")
    response = await relay_client.post(
        "/relay/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers
    )
    received, clean = await read_stream(response)
    assert clean
    events = [line[6:] for line in received.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "not JSON" in json.loads(events[-2])["error"]["message"]


async def test_a_provider_that_cuts_a_plain_answer_becomes_a_502(
    relay_client: Client, aiohttp_server: Any
) -> None:
    """Headers promised a body that never came in full: an OpenAI-format 502, not a 500."""

    async def behaviour(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"id": "chatcmpl-1", ')
        assert request.transport is not None
        request.transport.close()
        return response

    server = await aiohttp_server(provider_app(behaviour))
    headers = await instance_at(relay_client, server, "openai")
    response = await relay_client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status == 502
    assert "broke off" in (await response.json())["error"]["message"]


# -- the upstream dies mid-request --------------------------------------------------------------


def dying_upstream() -> web.Application:
    """`/before-headers` drops the connection at once; `/mid-body` and `/mid-stream` later."""

    async def before_headers(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    async def mid_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    async def mid_stream(request: web.Request) -> web.StreamResponse:
        return await stream_then(request, b"event: tick\ndata: 0\n\n", "cut")

    app = web.Application()
    app.router.add_get("/before-headers", before_headers)
    app.router.add_get("/mid-body", mid_body)
    app.router.add_get("/mid-stream", mid_stream)
    return app


async def test_upstream_that_dies_mid_request_gives_502_or_a_cut_body(
    aiohttp_client: Any, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """Before its headers: a 502 envelope. After them: the client's body is cut, not padded."""
    upstream = await aiohttp_server(dying_upstream())
    settings = make_settings(upstream=str(upstream.make_url("")).rstrip("/"))
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))

    response = await client.get("/before-headers")
    assert response.status == 502
    body = await response.json()
    assert body["success"] is False and body["error"]["code"] == "UPSTREAM_UNAVAILABLE"

    for path, first in (("/mid-body", b"x" * 1000), ("/mid-stream", b"data: 0")):
        response = await client.get(path)
        assert response.status == 200
        received, clean = await read_stream(response)
        assert not clean, path
        assert first in received

    # The gateway keeps serving after all that.
    assert (await client.get("/gateway/health")).status == 200


# -- the registry cannot be written -------------------------------------------------------------


def registry_db(client: Client) -> Any:
    """The registry's own SQLite connection, to drive it into the states a real disk reaches."""
    return client.server.app[REGISTRY].store.store.database.db


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
async def test_registration_on_a_full_or_read_only_store_is_503_and_writes_nothing(
    gateway: Client, fault: str
) -> None:
    """SQLITE_FULL / SQLITE_READONLY on the live registry: a clear 503, and no trace left.

    Both are the very error codes SQLite returns on a full disk or a read-only file. They are
    produced on the real connection (max_page_count pinned to the current size, or query_only)
    because this sandbox cannot fill a disk or mount one read-only, and `chmod` does not stop
    root; `chattr +i` would, but it kills SQLite with SIGBUS through its mapped -shm file.
    """
    db = registry_db(gateway)
    written: list[str] = []
    bodies = [
        {"provider": "openai", "model": f"model-{n}", "api_key": f"sk-fault-{n:04d}-abcdefgh"}
        for n in range(200)
    ]
    if fault == "disk full":
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages}")
    else:
        db.execute("PRAGMA query_only = 1")
    refused = None
    for body in bodies:
        response = await gateway.post("/api/v1/instances", json=body)
        if response.status == 201:
            written.append((await response.json())["data"]["instance_id"])
            continue
        refused = body, response.status, await response.json()
        break
    assert refused is not None, "the registry never filled up"
    body, status, answer = refused
    assert status == 503
    assert answer["error"]["code"] == "SYSTEM_STORAGE_ERROR"
    assert ("full" if fault == "disk full" else "read-only") in answer["error"]["message"]
    assert body["api_key"] not in json.dumps(answer)

    db.execute("PRAGMA max_page_count = 1073741823")
    db.execute("PRAGMA query_only = 0")
    listed = await (await gateway.get("/api/v1/instances")).json()
    models = {i["model"] for i in listed["data"]["instances"]}
    assert body["model"] not in models
    assert models == {b["model"] for b in bodies[: len(written)]}
    # Once writable again the same configuration registers, as new, with its derived id.
    again = await gateway.post("/api/v1/instances", json=body)
    assert again.status == 201
    assert (await again.json())["data"]["created"] is True


# -- instances.yaml goes bad while the gateway runs --------------------------------------------

GOOD_YAML = """instances:
  pmem-yaml:
    provider: openai
    model: gpt-4o
    api_key: sk-yaml-0123456789abcdef
"""


@pytest.mark.parametrize(
    "corruption",
    [
        "instances:\n  pmem-yaml: {provider: openai\n",  # not YAML
        "instances:\n  pmem-yaml:\n    provider: skynet\n    model: m\n",  # bad entry
        "\x00\x01\x02binary",  # not text a human wrote
        "- just\n- a list\n",  # wrong shape
    ],
)
async def test_a_corrupted_instances_file_keeps_the_previous_configuration(
    gateway: Client,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    corruption: str,
) -> None:
    """An edit that breaks instances.yaml is logged clearly and changes nothing in force."""
    path = make_settings().instances_file
    registry = gateway.server.app[REGISTRY]
    path.write_text(GOOD_YAML)
    assert registry.reload_instances_file()
    headers = {"X-PowerMem-Instance": "pmem-yaml"}
    assert (await gateway.get("/api/v1/memories", headers=headers)).status == 200

    path.write_text(corruption)
    os.utime(path, (1, 1))  # a different stamp even within the same clock tick
    with caplog.at_level(logging.ERROR, logger="gateway.registry"):
        assert not registry.reload_instances_file()
    (record,) = [r for r in caplog.records if r.name == "gateway.registry"]
    assert "previous one kept" in record.getMessage()
    assert "sk-yaml" not in record.getMessage()
    response = await gateway.get("/api/v1/memories", headers=headers)
    assert response.status == 200
    shown = await (await gateway.get("/api/v1/instances/pmem-yaml")).json()
    assert shown["data"]["model"] == "gpt-4o"

    path.write_text(GOOD_YAML.replace("gpt-4o", "gpt-4.1"))
    assert registry.reload_instances_file()
    shown = await (await gateway.get("/api/v1/instances/pmem-yaml")).json()
    assert shown["data"]["model"] == "gpt-4.1"


# -- soak ---------------------------------------------------------------------------------------


def process_usage(pid: int) -> tuple[int, int]:
    """(open file descriptors, resident memory in kB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    (rss,) = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
    return fds, rss


async def test_a_soak_of_mixed_requests_leaks_no_descriptors_or_memory(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thousands of mixed calls, errors included: descriptors and memory settle where they were."""
    async with FakeOpenAI() as provider:
        env_file = tmp_path / "powermem.env"
        env_file.write_text(
            "LLM_PROVIDER=openai\nLLM_API_KEY=sk-soak-default-0123456789\nLLM_MODEL=m\n"
            f"OPENAI_LLM_BASE_URL={provider.url}\n"
        )
        monkeypatch.setenv("POWERMEM_GATEWAY_RELAY_TOKEN", RELAY_TOKEN)
        process = spawn_gateway(
            upstream=str(upstream.make_url("")).rstrip("/"),
            data_dir=tmp_path / "data",
            extra=("--env-file", str(env_file), "--log-level", "WARNING"),
        )
        await process.wait_healthy()
        url = process.url

        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, force_close=False)
        ) as session:
            register = {
                "provider": "openai",
                "model": "m",
                "api_key": "sk-soak-0123456789ab",
                "base_url": provider.url,
            }
            async with session.post(url + "/api/v1/instances", json=register) as response:
                instance_id = (await response.json())["data"]["instance_id"]

            def request(n: int) -> tuple[str, str, dict[str, Any]]:
                implicit = {
                    "X-PowerMem-LLM-Provider": "deepseek",
                    "X-PowerMem-LLM-Model": f"model-{n % 7}",
                    "X-PowerMem-LLM-Api-Key": f"sk-soak-implicit-{n % 7:04d}-abcdef",
                    "X-PowerMem-LLM-Base-Url": provider.url,
                }
                # A real gateway process: powermem's side of a relay call (the default LLM).
                bound = dict(RELAY)
                kinds: list[tuple[str, str, dict[str, Any]]] = [
                    ("GET", "/api/v1/memories?q=1", {}),
                    ("POST", "/api/v1/memories", {"json": {"content": "x" * 512}}),
                    ("GET", "/api/v1/memories", {"headers": implicit}),
                    ("GET", "/api/v1/memories", {"headers": {"X-PowerMem-Instance": instance_id}}),
                    ("GET", "/fail?status=503", {}),
                    ("GET", "/api/v1/memories", {"headers": {"X-PowerMem-Instance": "pmem-0"}}),
                    ("POST", "/relay/v1/chat/completions", {"json": CHAT, "headers": bound}),
                    (
                        "POST",
                        "/relay/v1/chat/completions",
                        {"json": CHAT | {"stream": True}, "headers": bound},
                    ),
                    ("POST", "/relay/v1/chat/completions", {"json": CHAT, "headers": RELAY}),
                    ("POST", "/relay/v1/chat/completions", {"json": CHAT}),
                    ("GET", "/sse?pause=0", {}),
                    ("GET", "/gateway/status", {}),
                ]
                return kinds[n % len(kinds)]

            async def run(count: int, offset: int) -> None:
                gate = asyncio.Semaphore(16)

                async def one(n: int) -> None:
                    method, path, kwargs = request(n)
                    async with gate, session.request(method, url + path, **kwargs) as response:
                        await response.read()
                        assert response.status < 500 or path.startswith("/fail"), path

                await asyncio.gather(*(one(offset + n) for n in range(count)))

            await run(600, 0)  # warm-up: pools, caches and allocator arenas reach their size
            await asyncio.sleep(0.5)
            fds_before, rss_before = process_usage(process.proc.pid)
            await run(3000, 600)
            await asyncio.sleep(0.5)
            fds_after, rss_after = process_usage(process.proc.pid)

    # Pools keep what the last burst left idle, which differs from one moment to the next by
    # up to one connection per concurrent request (16); a leak of a descriptor per error or
    # per stream would show as hundreds over 3 000 requests.
    assert fds_after <= fds_before + 16, (fds_before, fds_after)
    assert rss_after <= rss_before + 30 * 1024, (rss_before, rss_after)
