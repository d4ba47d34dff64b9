"""End to end: clients that know only a base URL reach their own LLM, configured by `register`.

The stock powermem-server runs managed by the gateway. `register` writes Claude Code's knob
(POWERMEM_BASE_URL in powermem's runtime.env) and Cursor's (the MCP server URL in mcp.json).
Then, exactly as the tools would: powermem's own SDK HTTP client takes POWERMEM_BASE_URL from
the environment the hook launcher builds by sourcing runtime.env, and the official `mcp` SDK
client connects to the URL in mcp.json with no header at all. Each memory add must reach only
its own fake provider, with its own key and model; a client without the prefix still gets
the .env's LLM; doctor finds every knob live; unregister puts the files back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.frontserver import managed_gateway
from tests.powermem_server import EMBEDDING_DIMS

pytestmark = pytest.mark.e2e

CLAUDE_KEY = "sk-ant-claude-code-knob-0123456789"
CURSOR_KEY = "sk-openai-cursor-knob-0123456789ab"
DEFAULT_KEY = "sk-default-env-knob-0123456789abcd"


class Fakes:
    def __init__(self) -> None:
        self.anthropic = FakeAnthropic()
        self.openai = FakeOpenAI()
        self.default = FakeOpenAI()
        self.embedder = FakeOpenAI(embedding_dims=EMBEDDING_DIMS)

    @property
    def llms(self) -> dict[str, Any]:
        return {"anthropic": self.anthropic, "openai": self.openai, "default": self.default}

    def chat_calls(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [c for c in fake.calls if c["path"].endswith(("/chat/completions", "/messages"))]
            for name, fake in self.llms.items()
        }

    def reset(self) -> None:
        for fake in self.llms.values():
            fake.calls.clear()

    def only(self, name: str) -> list[dict[str, Any]]:
        calls = self.chat_calls()
        assert calls[name], f"{name} got no call"
        assert all(not seen for other, seen in calls.items() if other != name), calls
        return calls[name]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[str, Fakes]]:
    fakes = Fakes()
    for fake in (*fakes.llms.values(), fakes.embedder):
        await fake.start()
    server, url, _ = await managed_gateway(
        tmp_path,
        embedding_url=fakes.embedder.url,
        default_url=fakes.default.url,
        default_key=DEFAULT_KEY,
        # Where the CLI on this machine looks for the admin token (HOME is a fresh folder).
        data_dir=Path.home() / ".powermem" / "gateway",
    )
    try:
        yield url, fakes
    finally:
        await server.close()
        for fake in (*fakes.llms.values(), fakes.embedder):
            await fake.close()


async def cli_run(*argv: str, **env: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, list(argv), env=env)


def launcher_environment(runtime_env: Path) -> dict[str, str]:
    """What powermem's hook launcher exports after `set -a; . runtime.env` (POWERMEM_* only)."""
    script = f'set -a; . "{runtime_env}"; env'
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    pairs = (line.partition("=") for line in done.stdout.splitlines())
    return {k: v for k, _, v in pairs if k.startswith("POWERMEM_")}


async def test_url_only_clients_reach_their_own_provider_after_register(
    stack: tuple[str, Fakes], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """powermem's SDK client via runtime.env and the mcp SDK via mcp.json: each its own LLM."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    from powermem.core.memory import _HTTPMemoryClient

    url, fakes = stack
    claude = await cli_run(
        *("register", "--client", "claude-code", "--gateway", url),
        *("--model", "claude-sonnet-4-6", "--base-url", fakes.anthropic.url),
        *("--api-key-env", "KEY"),
        KEY=CLAUDE_KEY,
    )
    assert claude.exit_code == 0, claude.output
    cursor = await cli_run(
        *("register", "--client", "cursor", "--global", "--gateway", url),
        *("--provider", "openai", "--model", "gpt-4o", "--base-url", fakes.openai.url),
        *("--api-key-env", "KEY"),
        KEY=CURSOR_KEY,
    )
    assert cursor.exit_code == 0, cursor.output
    claude_id = (clean_env / ".powermem" / "instance.id").read_text().strip()

    # Cursor: the URL in its mcp.json, and nothing else.
    mcp_json = json.loads((clean_env / ".cursor" / "mcp.json").read_text())
    entry = mcp_json["mcpServers"]["powermem"]
    assert set(entry) == {"url"}
    fakes.reset()
    # One session: every tool call's LLM call reaches Cursor's provider, whichever request of
    # the session its baggage came from (see gateway.proxy.mcp).
    async with (
        create_mcp_http_client() as http,
        streamable_http_client(entry["url"], http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for fact in ("I keep bees in my garden.", "My hives are painted blue."):
            result = await session.call_tool("add_memory", {"messages": fact, "user_id": "dora"})
            assert not result.is_error, result
    seen = fakes.chat_calls()
    assert not seen["anthropic"] and not seen["default"], seen
    assert len(seen["openai"]) >= 2, seen
    calls = fakes.only("openai")
    assert {c["authorization"] for c in calls} == {f"Bearer {CURSOR_KEY}"}
    assert {c["json"]["model"] for c in calls} == {"gpt-4o"}

    # Claude Code's hook: POWERMEM_BASE_URL from the environment its launcher builds.
    exported = launcher_environment(clean_env / ".powermem" / "runtime.env")
    assert exported["POWERMEM_BASE_URL"] == f"{url}/i/{claude_id}"
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    fakes.reset()
    client = await asyncio.to_thread(_HTTPMemoryClient.from_env_if_healthy)
    assert client is not None, "powermem's SDK found no healthy server at the scoped URL"
    added = await asyncio.to_thread(
        client.add, "I live in Lisbon. My cat is called Miso.", user_id="alice"
    )
    assert added["results"], added
    calls = fakes.only("anthropic")
    assert {c["x_api_key"] for c in calls} == {CLAUDE_KEY}
    assert {c["json"]["model"] for c in calls} == {"claude-sonnet-4-6"}

    # A client without the prefix: the .env's LLM, as before.
    fakes.reset()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/api/v1/memories", json={"content": "I cycle to work.", "user_id": "carol"}
        ) as response,
    ):
        assert response.status == 200, await response.text()
    calls = fakes.only("default")
    assert {c["authorization"] for c in calls} == {f"Bearer {DEFAULT_KEY}"}

    # doctor: every knob live; unregister: the files as they were (none, here).
    report = await cli_run("doctor", "--gateway", url, "--json")
    assert report.exit_code == 0, report.output
    checks = {c["step"]: c["state"] for c in json.loads(report.output)["checks"]}
    assert checks["claude-code knob"] == "ok" and checks["cursor (global) knob"] == "ok"
    assert checks["upstream LLM wired to the relay"] == "ok"
    for argv in (["claude-code"], ["cursor", "--global"]):
        done = await cli_run("unregister", "--client", *argv, "--gateway", url)
        assert done.exit_code == 0, done.output
    assert not (clean_env / ".powermem" / "runtime.env").exists()
    assert not (clean_env / ".cursor" / "mcp.json").exists()
