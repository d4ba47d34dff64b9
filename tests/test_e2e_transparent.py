"""The stock powermem-server directly and through the gateway: the same answers, no 502 of
our own making, and an LLM failure the caller can see."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.proxy.managed import free_port
from gateway.settings import Settings
from tests.fakes.providers import FakeOpenAI
from tests.frontserver import GatewayTestServer
from tests.powermem_server import PowermemServer

pytest_plugins = ["tests.conftest_powermem"]
pytestmark = pytest.mark.e2e

Call = tuple[str, str, Any]
_VOLATILE = re.compile(
    r'"(id|memory_id|created_at|updated_at|timestamp|last_accessed_at|request_id)"'
    r':\s*("[^"]*"|\d+)'
)
# Search scores (timing-dependent decay) and times differ from run to run; nothing else may.
_SCORE = re.compile(r"\d+\.\d{6,}(e-?\d+)?")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


@pytest.fixture
async def through(powermem: PowermemServer, tmp_path: Path) -> AsyncIterator[str]:
    """A gateway in front of the stock server (external mode); its base URL."""
    settings = Settings(
        upstream=powermem.url,
        data_dir=tmp_path / "data",
        instances_file=tmp_path / "instances.yaml",
        env_file=tmp_path / "none.env",
    )
    server = GatewayTestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def sequence(user: str) -> list[Call]:
    """Every kind of answer powermem gives, its 404s and validation errors included."""
    return [
        ("GET", "/api/v1/system/health", None),
        ("GET", f"/api/v1/users/{user}/profile", None),
        ("POST", "/api/v1/memories", {"content": "I keep bees.", "user_id": user, "infer": False}),
        ("GET", "/api/v1/memories/999999999", None),
        ("POST", "/api/v1/memories/search", {"query": "bees", "user_id": user}),
        ("GET", f"/api/v1/memories?user_id={user}", None),
        ("POST", "/api/v1/memories", {"user_id": user}),
        ("GET", f"/api/v1/users/{user}/profile", None),
        ("DELETE", "/api/v1/memories/999999999", None),
        ("GET", "/no/such/route", None),
    ]


async def run(session: aiohttp.ClientSession, base: str, user: str) -> list[tuple[int, str]]:
    answers = []
    for method, path, body in sequence(user):
        async with session.request(method, base + path, json=body) as response:
            text = await response.text()
        text = _TIME.sub("T", _VOLATILE.sub(r'"\1": "…"', text.replace(user, "U")))
        text = _SCORE.sub("0.x", text)
        answers.append((response.status, text))
    return answers


async def test_every_route_answers_the_same_directly_and_through_the_gateway(
    powermem: PowermemServer, through: str
) -> None:
    """Identical statuses and bodies (ids and times aside). powermem closes some keep-alive
    connections without saying so, so the direct client needs a new connection per request;
    through the gateway one keep-alive connection serves them all."""
    fresh = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=fresh) as direct,
        aiohttp.ClientSession() as proxied,
    ):
        expected = await run(direct, powermem.url, "direct-user")
        got = await run(proxied, through, "gateway-user")
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert 502 not in [s for s, _ in got]
    for (_, want), (_, have) in zip(expected, got, strict=True):
        assert have == want


async def test_answers_powermem_ends_by_closing_never_become_502s(
    powermem: PowermemServer, through: str
) -> None:
    """A missing profile, then a memory add, ten times back to back: every add succeeds."""
    async with aiohttp.ClientSession() as session:
        for n in range(10):
            async with session.get(f"{through}/api/v1/users/u{n}/profile") as response:
                assert response.status == 404
            body = {"content": f"Fact {n}.", "user_id": f"u{n}", "infer": False}
            async with session.post(f"{through}/api/v1/memories", json=body) as response:
                assert response.status == 200, await response.text()


async def test_a_body_over_powermems_limit_spoils_nothing_for_the_next_requests(
    powermem: PowermemServer, through: str
) -> None:
    """A body over 1 MiB (streamed, as chunks) gets powermem's own answer, and the requests
    after it on the same connection all succeed."""
    big = json.dumps({"content": "x" * (1024 * 1024 + 10), "user_id": "big"}).encode()
    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/json"}
        async with session.post(
            f"{through}/api/v1/memories", data=io.BytesIO(big), headers=headers
        ) as response:
            await response.read()
            assert response.status < 600
        for n in range(5):
            body = {"content": f"After {n}.", "user_id": "big", "infer": False}
            async with session.post(f"{through}/api/v1/memories", json=body) as response:
                assert response.status == 200, await response.text()


async def test_a_memory_add_whose_key_is_wrong_says_so_to_the_caller(
    powermem_factory: Any, tmp_path: Path, fake_llm: FakeOpenAI
) -> None:
    """The instance's provider refuses its key: the caller's answer names the failure."""
    port = free_port()
    powermem = await powermem_factory(f"http://127.0.0.1:{port}/relay/v1", llm_key="relay-t0ken")
    settings = Settings(
        port=port,
        upstream=powermem.url,
        relay_token="relay-t0ken",
        data_dir=tmp_path / "data",
        instances_file=tmp_path / "instances.yaml",
        env_file=tmp_path / "none.env",
    )
    server = GatewayTestServer(create_app(settings), host="127.0.0.1", port=port)
    await server.start_server()
    base = f"http://127.0.0.1:{port}"
    wrong = {
        "X-PowerMem-LLM-Provider": "openai",
        "X-PowerMem-LLM-Model": "gpt-test",
        "X-PowerMem-LLM-Api-Key": "sk-wrong-key-0123456789abcdef",
        "X-PowerMem-LLM-Base-Url": fake_llm.url,
    }
    fake_llm.fail(401, times=100)
    try:
        async with aiohttp.ClientSession() as session:
            body = {"content": "I teach chemistry.", "user_id": "w"}
            async with session.post(
                f"{base}/api/v1/memories", json=body, headers=wrong
            ) as response:
                text = await response.text()
                error = response.headers.get("X-PowerMem-LLM-Error")
                instance_id = response.headers["X-PowerMem-Instance"]
        assert error is not None and error.startswith("401 "), (response.status, text)
        assert "sk-wrong-key" not in error
        assert fake_llm.calls_to("/chat/completions"), "the provider was asked"
        registry = server.app[REGISTRY]
        await registry.flush_usage()
        usage = await registry.usage(instance_id)
        assert usage["llm_errors"] >= 1
        assert usage["last_llm_error"]["status"] == 401
    finally:
        await server.close()
