"""End to end: `serve` without --upstream runs the stock powermem-server wired to the relay.

Three clients share one gateway and one memory store: A (Anthropic, implicit headers), B
(OpenAI, explicit registration), C (no headers: the .env's default LLM). Each LLM call
powermem makes must reach only the provider of the client that caused it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.http.appkeys import RELAY, UPSTREAM
from gateway.proxy.managed import ManagedUpstream
from tests.conftest import needs_admin
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.frontserver import managed_gateway
from tests.powermem_server import EMBEDDING_DIMS

pytestmark = pytest.mark.e2e

A_KEY = "sk-ant-client-a-0123456789abcdef"
B_KEY = "sk-openai-client-b-0123456789abcdef"
D_KEY = "sk-deepseek-client-d-0123456789abcdef"
DEFAULT_KEY = "sk-default-env-0123456789abcdef"
A_HEADERS = {
    "X-PowerMem-LLM-Provider": "anthropic",
    "X-PowerMem-LLM-Model": "claude-sonnet-4-6",
    "X-PowerMem-LLM-Api-Key": A_KEY,
    "X-PowerMem-Client": "claude-code",
}


@dataclass
class Stack:
    url: str
    server: TestServer
    session: aiohttp.ClientSession
    anthropic: FakeAnthropic
    openai: FakeOpenAI
    deepseek: FakeOpenAI
    default: FakeOpenAI
    embedder: FakeOpenAI
    data_dir: Path

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One call; admin calls carry the token the gateway generated in its data dir."""
        headers = dict(headers or {})
        if needs_admin(method, path):
            token = (self.data_dir / "admin.token").read_text().strip()
            headers.setdefault("Authorization", f"Bearer {token}")
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            return response.status, dict(response.headers), json.loads(text) if text else None

    def llm_fakes(self) -> dict[str, FakeOpenAI | FakeAnthropic]:
        return {
            "anthropic": self.anthropic,
            "openai": self.openai,
            "deepseek": self.deepseek,
            "default": self.default,
        }

    def reset(self) -> None:
        for fake in self.llm_fakes().values():
            fake.calls.clear()

    def chat_calls(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [c for c in fake.calls if c["path"].endswith(("/chat/completions", "/messages"))]
            for name, fake in self.llm_fakes().items()
        }


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    fakes = [FakeAnthropic(), FakeOpenAI(), FakeOpenAI(), FakeOpenAI()]
    embedder = FakeOpenAI(embedding_dims=EMBEDDING_DIMS)
    for fake in (*fakes, embedder):
        await fake.start()
    anthropic, openai, deepseek, default = fakes
    server, url, settings = await managed_gateway(
        tmp_path, embedding_url=embedder.url, default_url=default.url, default_key=DEFAULT_KEY
    )
    session = aiohttp.ClientSession()
    try:
        yield Stack(
            url=url,
            server=server,
            session=session,
            anthropic=anthropic,  # type: ignore[arg-type]
            openai=openai,  # type: ignore[arg-type]
            deepseek=deepseek,  # type: ignore[arg-type]
            default=default,  # type: ignore[arg-type]
            embedder=embedder,
            data_dir=settings.data_dir,
        )
    finally:
        await session.close()
        await server.close()
        for fake in (*fakes, embedder):
            await fake.close()


async def _register(stack: Stack, provider: str, model: str, key: str, url: str) -> str:
    status, _, body = await stack.call(
        "POST",
        "/api/v1/instances",
        {"client": provider, "provider": provider, "model": model, "api_key": key, "base_url": url},
    )
    assert status == 201, body
    instance_id: str = body["data"]["instance_id"]
    return instance_id


def _only(stack: Stack, name: str) -> list[dict[str, Any]]:
    """The chat calls since the last reset, asserting they all went to the `name` fake."""
    calls = stack.chat_calls()
    for other, seen in calls.items():
        if other != name:
            assert seen == [], f"{other} got calls meant for {name}"
    assert calls[name], f"{name} got no call"
    return calls[name]


async def test_each_client_reaches_only_its_own_provider(stack: Stack) -> None:
    """A via Anthropic headers, B via a registered OpenAI id, C via the default; one store."""
    # A: implicit registration on its first request.
    status, headers, body = await stack.call(
        "POST",
        "/api/v1/memories",
        {"content": "I live in Lisbon. My cat is called Miso.", "user_id": "alice"},
        {**A_HEADERS, "X-PowerMem-LLM-Base-Url": stack.anthropic.url},
    )
    assert status == 200, body
    a_id = headers["X-PowerMem-Instance"]
    assert headers["X-PowerMem-Instance-Created"] == "true"
    a_calls = _only(stack, "anthropic")
    assert {c["x_api_key"] for c in a_calls} == {A_KEY}
    assert {c["json"]["model"] for c in a_calls} == {"claude-sonnet-4-6"}
    assert {c["kind"] for c in a_calls} == {"facts", "memory_update"}

    # B: explicit registration, then the id only.
    b_id = await _register(stack, "openai", "gpt-4o", B_KEY, stack.openai.url)
    stack.reset()
    status, headers, body = await stack.call(
        "POST",
        "/api/v1/memories",
        {"content": "I prefer green tea.", "user_id": "bob"},
        {"X-PowerMem-Instance": b_id},
    )
    assert status == 200, body
    assert headers["X-PowerMem-Instance"] == b_id
    assert "X-PowerMem-Instance-Created" not in headers
    b_calls = _only(stack, "openai")
    assert {c["authorization"] for c in b_calls} == {f"Bearer {B_KEY}"}
    assert {c["json"]["model"] for c in b_calls} == {"gpt-4o"}

    # C: no header at all, the .env's LLM.
    stack.reset()
    status, headers, body = await stack.call(
        "POST", "/api/v1/memories", {"content": "I cycle to work.", "user_id": "carol"}
    )
    assert status == 200, body
    assert "X-PowerMem-Instance" not in headers
    c_calls = _only(stack, "default")
    assert {c["authorization"] for c in c_calls} == {f"Bearer {DEFAULT_KEY}"}
    assert {c["json"]["model"] for c in c_calls} == {"default-model"}

    # One shared store: B finds what A stored; search asks no LLM.
    stack.reset()
    status, _, body = await stack.call(
        "POST",
        "/api/v1/memories/search",
        {"query": "cat Miso", "user_id": "alice"},
        {"X-PowerMem-Instance": b_id},
    )
    assert status == 200, body
    assert body["data"]["results"][0]["content"] == "My cat is called Miso"
    assert stack.chat_calls() == {n: [] for n in stack.llm_fakes()}

    # Usage lands on the instance that caused it.
    status, _, shown = await stack.call("GET", f"/api/v1/instances/{a_id}")
    assert shown["data"]["usage"]["relay_calls"] == len(a_calls)
    assert shown["data"]["usage"]["requests"] >= 1


async def test_every_llm_route_of_powermem_uses_the_callers_instance(stack: Stack) -> None:
    """Batch add, observations with inference, profiles and agent memories follow the id."""
    b_id = await _register(stack, "openai", "gpt-4o", B_KEY, stack.openai.url)
    bound = {"X-PowerMem-Instance": b_id}
    routes: list[tuple[str, dict[str, Any]]] = [
        (
            "/api/v1/memories/batch",
            {"memories": [{"content": "I speak Portuguese."}], "user_id": "bob"},
        ),
        (
            "/api/v1/observations",
            {"content": "pytest failed in test_login.", "user_id": "bob", "infer": True},
        ),
        (
            "/api/v1/users/bob/profile",
            {"messages": "I am a backend engineer who loves Rust.", "profile_type": "content"},
        ),
        (
            "/api/v1/users/bob/profile",
            {"messages": "I work on databases.", "profile_type": "topics"},
        ),
        ("/api/v1/agents/agent-7/memories", {"content": "Deploys happen on Fridays."}),
    ]
    for path, payload in routes:
        stack.reset()
        status, headers, body = await stack.call("POST", path, payload, bound)
        assert status == 200, (path, body)
        assert headers["X-PowerMem-Instance"] == b_id
        calls = _only(stack, "openai")
        assert {c["authorization"] for c in calls} == {f"Bearer {B_KEY}"}, path


async def test_concurrent_clients_never_cross_talk(stack: Stack) -> None:
    """40 interleaved adds from A and B: every call reaches the caller's provider with its key."""
    a_id = await _register(stack, "anthropic", "claude-sonnet-4-6", A_KEY, stack.anthropic.url)
    b_id = await _register(stack, "openai", "gpt-4o", B_KEY, stack.openai.url)
    stack.reset()

    async def add(n: int) -> None:
        instance = a_id if n % 2 == 0 else b_id
        status, headers, body = await stack.call(
            "POST",
            "/api/v1/memories",
            {"content": f"Fact number {n} is about topic{n}.", "user_id": f"user{n % 2}"},
            {"X-PowerMem-Instance": instance},
        )
        assert status == 200, body
        assert headers["X-PowerMem-Instance"] == instance

    await asyncio.gather(*(add(n) for n in range(40)))
    calls = stack.chat_calls()
    assert calls["default"] == [] and calls["deepseek"] == []
    assert {c["x_api_key"] for c in calls["anthropic"]} == {A_KEY}
    assert {c["authorization"] for c in calls["openai"]} == {f"Bearer {B_KEY}"}
    # Every add extracted its own facts from its own provider: no request was served twice
    # or by the other client's provider.
    facts_a = [c for c in calls["anthropic"] if c["kind"] == "facts"]
    facts_b = [c for c in calls["openai"] if c["kind"] == "facts"]
    assert len(facts_a) == 20 and len(facts_b) == 20
    for fake_calls, parity in ((facts_a, 0), (facts_b, 1)):
        numbers = {
            int(n) for c in fake_calls for n in re.findall(r"topic(\d+)", json.dumps(c["json"]))
        }
        assert numbers == {n for n in range(40) if n % 2 == parity}


async def test_mcp_client_tools_reach_its_own_provider(stack: Stack) -> None:
    """An MCP session whose headers name instance D adds memories through D's provider."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    d_id = await _register(stack, "deepseek", "deepseek-chat", D_KEY, stack.deepseek.url)
    stack.reset()
    async with (
        create_mcp_http_client(headers={"X-PowerMem-Instance": d_id}) as http,
        streamable_http_client(stack.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert "add_memory" in tools
        result = await session.call_tool(
            "add_memory", {"messages": "I keep bees in my garden.", "user_id": "dora"}
        )
        assert not result.is_error, result
        result = await session.call_tool(
            "add_memory_with_profile",
            {"messages": "I am a beekeeper in Porto.", "user_id": "dora"},
        )
        assert not result.is_error, result
    calls = _only(stack, "deepseek")
    assert {c["authorization"] for c in calls} == {f"Bearer {D_KEY}"}
    assert {c["json"]["model"] for c in calls} == {"deepseek-chat"}
    # Fact extraction and profile extraction both ran there. (Query rewriting cannot be
    # exercised: powermem 1.1.7's rewriter imports `src.powermem…` and fails when enabled.)
    assert {"facts", "profile"} <= {c["kind"] for c in calls}


async def test_relay_refuses_powermem_impostors_without_the_token(stack: Stack) -> None:
    """Only the managed upstream's token opens the relay."""
    status, _, body = await stack.call(
        "POST",
        "/relay/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert stack.chat_calls() == {n: [] for n in stack.llm_fakes()}


async def test_killed_upstream_is_healed_by_the_gateway(stack: Stack) -> None:
    """kill -9 of powermem: requests get 503 + Retry-After until it is back, then work again."""
    managed = stack.server.app[UPSTREAM]
    assert isinstance(managed, ManagedUpstream)
    pid = managed.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    saw_503 = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, headers, body = await stack.call("GET", "/api/v1/system/health")
        if status == 200 and managed.pid != pid:
            break
        if status == 503:
            saw_503 = True
            assert body["error"]["code"] == "UPSTREAM_STARTING"
            assert int(headers["Retry-After"]) >= 1
        await asyncio.sleep(0.1)
    else:
        pytest.fail("upstream did not come back")
    assert saw_503
    assert managed.restarts == 1
    status, _, body = await stack.call(
        "POST", "/api/v1/memories", {"content": "I am back.", "user_id": "erin"}
    )
    assert status == 200, body


async def test_wiring_probe_proves_the_chain_without_a_provider(stack: Stack) -> None:
    """POST /gateway/probe sees powermem's LLM call arrive with baggage; no provider is called."""
    status, _, body = await stack.call("POST", "/gateway/probe")
    assert status == 200, body
    assert body["data"]["wired"] is True, body
    assert stack.chat_calls() == {n: [] for n in stack.llm_fakes()}
    assert stack.server.app[RELAY].stats.proxied_calls >= 1
    status, _, found = await stack.call("GET", "/api/v1/memories?user_id=powermem-gateway-probe")
    assert status == 200
    assert not found["data"]["memories"] if isinstance(found["data"], dict) else not found["data"]


async def test_no_plaintext_key_reaches_powermem_or_its_files(stack: Stack) -> None:
    """Instance keys never reach powermem: not its requests, its logs, nor its database."""
    b_id = await _register(stack, "openai", "gpt-4o", B_KEY, stack.openai.url)
    await stack.call(
        "POST",
        "/api/v1/memories",
        {"content": "I read poetry.", "user_id": "alice"},
        {**A_HEADERS, "X-PowerMem-LLM-Base-Url": stack.anthropic.url},
    )
    await stack.call(
        "POST",
        "/api/v1/memories",
        {"content": "I bake bread.", "user_id": "bob"},
        {"X-PowerMem-Instance": b_id},
    )
    # What powermem sent to its embedder is what it received from us (it forwards baggage).
    for call in stack.embedder.calls:
        dump = json.dumps(call)
        assert A_KEY not in dump and B_KEY not in dump
        assert call["baggage"] in (None, f"powermem.instance={b_id}") or call["baggage"].startswith(
            "powermem.instance=pmem-"
        )
    for root, _, files in os.walk(stack.data_dir.parent):
        for name in files:
            path = Path(root) / name
            if path.is_file():
                raw = path.read_bytes()
                assert A_KEY.encode() not in raw, path
                assert B_KEY.encode() not in raw, path
