"""The stock powermem-server, wired as the gateway wires it, calls the LLM we point it at."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import UpstreamStarting, UpstreamUnavailable
from gateway.proxy.managed import ManagedUpstream
from gateway.proxy.upstream_env import (
    default_llm,
    read_env_file,
    render_env,
    upstream_environment,
)
from gateway.settings import Settings
from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import PowermemFactory, PowermemServer, powermem_env

pytest_plugins = ["tests.conftest_powermem"]

BAGGAGE = "powermem.instance=pmem-0123456789abcdef"


async def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers or {}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def test_upstream_environment_replaces_every_llm_setting() -> None:
    """The .env's LLM settings are gone, storage and embedder settings stay, the relay is set."""
    env = {
        **powermem_env(Path("/tmp/x"), "http://127.0.0.1:9/v1"),
        "OPENROUTER_API_KEY": "sk-or-secret",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "OPENAI_API_KEY": "sk-used-by-embedder",
    }
    out = upstream_environment(
        env, relay_url="http://127.0.0.1:8848/relay/v1/", relay_token="tok", data_dir=None
    )
    assert out["LLM_PROVIDER"] == "openai"
    assert out["LLM_API_KEY"] == "tok"
    assert out["OPENAI_LLM_BASE_URL"] == "http://127.0.0.1:8848/relay/v1"
    assert out["OPENROUTER_API_KEY"] == ""
    assert "ANTHROPIC_BASE_URL" not in out
    assert out["OPENAI_API_KEY"] == "sk-used-by-embedder"
    assert out["SQLITE_PATH"] == "/tmp/x/powermem.db"
    assert out["OTEL_PROPAGATORS"] == "tracecontext,baggage"
    assert "sk-ant-env-file-key" not in out.values()


def test_default_llm_follows_powermem_precedence() -> None:
    """The .env's LLM becomes an instance config, with powermem's variable names and defaults."""
    llm = default_llm({"LLM_PROVIDER": "deepseek", "DEEPSEEK_API_KEY": "sk-ds-123456"})
    assert llm is not None
    assert (llm.provider, llm.model, llm.api_key) == ("deepseek", "gpt-4o-mini", "sk-ds-123456")
    llm = default_llm({"LLM_PROVIDER": "qwen", "LLM_API_KEY": "k", "LLM_MODEL": "qwen-max"})
    assert llm is not None and llm.base_url == ""
    assert default_llm({"DATABASE_PROVIDER": "sqlite"}) is None


def test_rendered_env_reads_back_unchanged(tmp_path: Path) -> None:
    """`upstream-env` output is a dotenv file that reads back to the same values."""
    env = {"A": "plain", "B": "with space and 'inner' quotes, a#hash", "C": ""}
    path = tmp_path / "upstream.env"
    path.write_text(render_env(env))
    assert read_env_file(path) == env
    assert read_env_file(tmp_path / "missing.env") == {}


@pytest.mark.e2e
async def test_memory_add_with_infer_calls_llm_and_embedder(
    powermem: PowermemServer, fake_llm: FakeOpenAI, fake_embedder: FakeOpenAI
) -> None:
    """An inferred add runs fact extraction and the update decision on our LLM and stores facts."""
    body = {"content": "I live in Lisbon. My cat is called Miso.", "user_id": "u1", "infer": True}
    added = await _post(powermem.url + "/api/v1/memories", body)
    contents = {m["content"] for m in added["data"]}
    assert contents == {"I live in Lisbon", "My cat is called Miso"}
    assert [c["kind"] for c in fake_llm.calls] == ["facts", "memory_update"]
    assert {c["authorization"] for c in fake_llm.calls} == {"Bearer relay-token-for-tests"}
    assert {c["json"]["model"] for c in fake_llm.calls} == {"gateway-relay"}
    assert fake_embedder.calls_to("/embeddings")
    assert {c["authorization"] for c in fake_embedder.calls} == {"Bearer sk-embed-test-key"}

    before = len(fake_llm.calls)
    found = await _post(
        powermem.url + "/api/v1/memories/search", {"query": "cat Miso", "user_id": "u1"}
    )
    assert found["data"]["results"][0]["content"] == "My cat is called Miso"
    assert len(fake_llm.calls) == before  # search embeds, it does not ask the LLM


@pytest.mark.e2e
async def test_baggage_of_the_request_rides_on_its_llm_calls(
    powermem: PowermemServer, fake_llm: FakeOpenAI, fake_embedder: FakeOpenAI
) -> None:
    """Each request's `baggage` reaches the LLM calls it causes, and only those."""
    url = powermem.url + "/api/v1/memories"
    await _post(url, {"content": "I play the cello.", "user_id": "a"}, {"baggage": BAGGAGE})
    tagged = len(fake_llm.calls)
    assert tagged >= 2
    await _post(url, {"content": "I grow tomatoes.", "user_id": "b"})
    other = "powermem.instance=pmem-fedcba9876543210"
    await _post(url, {"content": "I run marathons.", "user_id": "c"}, {"baggage": other})

    seen = [c["baggage"] for c in fake_llm.calls]
    assert seen[:tagged] == [BAGGAGE] * tagged
    assert None in seen[tagged:] and other in seen[tagged:]
    assert set(seen) == {BAGGAGE, None, other}
    assert BAGGAGE in {c["baggage"] for c in fake_embedder.calls}


@pytest.mark.e2e
async def test_llm_url_can_be_any_relay(
    powermem_factory: PowermemFactory, fake_llm: FakeOpenAI
) -> None:
    """The factory aims powermem's LLM at whatever URL and token it is given."""
    server = await powermem_factory(fake_llm.url, llm_key="other-token")
    await _post(server.url + "/api/v1/memories", {"content": "I like tea.", "user_id": "t"})
    assert {c["authorization"] for c in fake_llm.calls} == {"Bearer other-token"}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


async def _until(predicate: Any, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_managed_upstream_restarts_a_killed_server(powermem: PowermemServer) -> None:
    """A killed server is noticed, reported as starting, and brought back healthy."""
    upstream = powermem.upstream
    first = upstream.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await _until(lambda: not upstream.ready, within=5)
    with pytest.raises(UpstreamStarting) as info:
        _ = upstream.url
    assert int(info.value.headers["Retry-After"]) >= 1
    await _until(lambda: upstream.ready)
    assert upstream.restarts == 1
    assert upstream.pid != first
    assert not _group_alive(first)
    async with (
        aiohttp.ClientSession() as session,
        session.get(upstream.url + "/api/v1/system/health") as resp,
    ):
        assert resp.status == 200


@pytest.mark.e2e
async def test_stop_leaves_no_process_behind(powermem: PowermemServer) -> None:
    """stop() ends the whole process group and the port stops answering."""
    pid = powermem.upstream.pid
    url = powermem.url
    assert pid is not None
    await powermem.stop()
    assert not _group_alive(pid)
    assert not powermem.upstream.ready
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url + "/api/v1/system/health")


@pytest.mark.e2e
async def test_startup_failure_shows_the_log_tail(tmp_path: Path) -> None:
    """A server that cannot start fails fast with its own last words."""
    settings = Settings(data_dir=tmp_path / "gw", powermem_command="powermem-server --bogus")
    upstream = ManagedUpstream(settings, relay_token="relay-secret-token", env={})
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.start()
    assert "No such option" in info.value.message
    assert "relay-secret-token" not in info.value.message
    assert (tmp_path / "gw" / "upstream.log").stat().st_mode & 0o777 == 0o600
