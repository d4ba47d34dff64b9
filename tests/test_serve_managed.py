"""`serve` with the stock powermem behind it: progress, readiness, the probe, and no orphans.

Real processes in a fresh HOME: the gateway (`python -m gateway serve`), the lifeline
launcher and the stock powermem-server, with fake OpenAI-compatible servers for embeddings
and the LLM.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.proxy.stale import group_members
from tests.conftest import REPO_ROOT, free_port
from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import EMBEDDING_DIMS, powermem_env
from tests.serving import Serve, alive, start_serve

pytestmark = pytest.mark.e2e

ENV_KEY = "sk-default-env-0123456789abcdef"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    async with FakeOpenAI(embedding_dims=EMBEDDING_DIMS) as embedder, FakeOpenAI() as llm:
        yield embedder, llm


def write_env(home: Path, embedder: FakeOpenAI, llm: FakeOpenAI, **extra: str) -> Path:
    """~/.powermem/.env as a user has it: SQLite, fake embedder, the fake LLM as default."""
    env = {
        **powermem_env(home, embedder.url),
        "LLM_PROVIDER": "openai",
        "LLM_API_KEY": ENV_KEY,
        "LLM_MODEL": "default-model",
        "OPENAI_LLM_BASE_URL": llm.url,
        **extra,
    }
    env.pop("HOME")
    path = home / ".powermem" / ".env"
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def managed_group(home: Path) -> int:
    return int(json.loads((home / ".powermem/gateway/upstream.pid").read_text())["pgid"])


async def gone(pids: list[int], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        await asyncio.sleep(0.1)
    return False


async def add_memory(serve: Serve, content: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            serve.url + "/api/v1/memories", json={"content": content, "user_id": "u1"}
        ) as response,
    ):
        await response.read()
        return response.status


async def test_terminal_shows_progress_ready_and_probe_and_kill_9_leaves_no_powermem(
    clean_env: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    """On a terminal: a progress line, 'ready', a passing probe; `kill -9` takes powermem along."""
    write_env(clean_env, *fakes)
    master, slave = pty.openpty()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--workers", "1"],
        stdout=slave,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(clean_env),
            "POWERMEM_GATEWAY_PORT": str(port),
        },
    )
    os.close(slave)
    screen = bytearray()

    async def read_until(text: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while text.encode() not in screen:
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            ready, _, _ = await asyncio.to_thread(select.select, [master], [], [], 0.2)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:
                    break

    try:
        await read_until("starting powermem")
        await read_until("powermem ready after")
        await read_until("ready: memory calls work")
        await read_until("wiring probe: powermem's LLM calls reach the relay with baggage.")
        assert b"\r\x1b[2K" in screen  # the live line is redrawn in place
        pgid = managed_group(clean_env)
        members = group_members(pgid)
        assert len(members) >= 2  # the launcher and powermem
        proc.kill()  # kill -9: no cleanup code runs in the gateway
        proc.wait()
        assert await gone(members), f"left running: {[p for p in members if alive(p)]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


async def test_two_workers_share_one_powermem_and_serve_memory_calls(
    clean_env: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    """`--workers 2`: two worker processes, one powermem, every worker ready and forwarding."""
    embedder, llm = fakes
    write_env(clean_env, embedder, llm)
    serve = start_serve(clean_env, "--workers", "2")
    try:
        await serve.wait_for("/gateway/ready", seconds=120)
        await serve.wait_output("ready: memory calls work")
        workers = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and b"gateway.process.worker" in (p / "cmdline").read_bytes()
            and f"PPid:\t{serve.proc.pid}\n" in (p / "status").read_text()
        ]
        assert len(workers) == 2
        pgid = managed_group(clean_env)
        assert group_members(pgid)  # exactly one managed group, owned by the supervisor
        statuses = await asyncio.gather(
            *(add_memory(serve, f"I keep fact number {n}.") for n in range(6))
        )
        assert statuses == [200] * 6
        assert {c["authorization"] for c in llm.calls} == {f"Bearer {ENV_KEY}"}
        async with aiohttp.ClientSession() as session:
            for _ in range(8):  # whichever worker answers, it sees powermem as ready
                async with session.get(serve.url + "/gateway/ready") as response:
                    assert response.status == 200
        members = group_members(pgid)
        assert serve.stop() == 0
        assert await gone([*members, *workers])
    finally:
        serve.stop()


async def test_a_powermem_left_by_an_earlier_gateway_is_stopped_first(
    clean_env: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    """Gateway and launcher both killed: the next serve stops the orphaned powermem first."""
    write_env(clean_env, *fakes)
    first = start_serve(clean_env, "--workers", "1")
    try:
        await first.wait_for("/gateway/ready", seconds=120)
        pgid = managed_group(clean_env)
        orphans = [pid for pid in group_members(pgid) if pid != pgid]
        assert orphans
        os.kill(first.proc.pid, signal.SIGKILL)
        os.kill(pgid, signal.SIGKILL)  # the launcher too: nobody is left to stop powermem
        first.proc.wait()
        await asyncio.sleep(1)
        assert any(alive(pid) for pid in orphans)
        second = start_serve(clean_env, "--workers", "1")
        try:
            await second.wait_for("/gateway/ready", seconds=120)
            assert "an earlier gateway left running" in second.output()
            assert not any(alive(pid) for pid in orphans)
            assert await add_memory(second, "Only one powermem writes the database.") == 200
        finally:
            second.stop()
    finally:
        first.stop()


async def test_broken_storage_is_not_ready_and_serve_says_why(
    clean_env: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    """powermem's health says 200, but its storage cannot be built: ready stays 503."""
    write_env(clean_env, *fakes, DATABASE_PROVIDER="oceanbase")
    serve = start_serve(clean_env, "--workers", "1")
    try:
        await serve.wait_output("powermem runs, but memory calls will fail", seconds=120)
        async with aiohttp.ClientSession() as session:
            async with session.get(serve.url + "/api/v1/system/health") as response:
                assert response.status == 200
            async with session.get(serve.url + "/gateway/ready") as response:
                body = await response.json()
                assert response.status == 503
                assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
                assert "storage or embedder could not be built" in body["error"]["message"]
    finally:
        serve.stop()


async def test_missing_instrumentation_makes_the_start_up_probe_shout(
    clean_env: Path, fakes: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    """powermem without its HTTPX instrumentation: serve says loudly that wiring is broken."""
    write_env(clean_env, *fakes)
    serve = start_serve(
        clean_env,
        "--workers",
        "1",
        env={
            "POWERMEM_GATEWAY_POWERMEM_COMMAND": (
                "env OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=httpx powermem-server"
            )
        },
    )
    try:
        await serve.wait_output("WIRING PROBE FAILED", seconds=150)
        assert "powermem-gateway doctor" in serve.output()
    finally:
        serve.stop()
