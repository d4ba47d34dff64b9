"""A plaintext key never shows up on disk, in a log line, in a response or upstream."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.settings import Settings
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]

# Every key the scenario uses; the middles are what a masked key never shows.
EXPLICIT = "sk-explicit-7Q2mZp4Lx9Vb3Nc8Rt6Yh1Wd"
IMPLICIT = "sk-implicit-8K3nXq5Mw0Cd4Pf9Su7Zj2Ge"
ROTATED = "sk-rotated-9L4oYr6Nx1De5Qg0Tv8Ak3Hf"
REFUSED = "sk-refused-0M5pZs7Oy2Ef6Rh1Uw9Bl4Ig"
IN_YAML = "sk-in-yaml-1N6qAt8Pz3Fg7Si2Vx0Cm5Jh"
KEYS = (EXPLICIT, IMPLICIT, ROTATED, REFUSED, IN_YAML)


def needles() -> list[bytes]:
    """Each key whole, and its middle (present in any copy, absent from any mask)."""
    return [n.encode() for key in KEYS for n in (key, key[6:-6])]


class Transcript:
    """Everything the gateway said back to its clients during the scenario."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.seen: list[bytes] = []

    async def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        body = await response.read()
        self.seen.append(f"{response.status} {dict(response.headers)}".encode() + body)
        return response, body


def private_files(data_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}


def assert_no_key_in(where: str, blob: bytes) -> None:
    for needle in needles():
        assert needle not in blob, f"plaintext key material found in {where}"


async def test_no_plaintext_key_anywhere(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Register, bind, proxy, rotate, fail: no file, log, response or upstream call has a key."""
    caplog.set_level(logging.DEBUG)
    settings = make_settings()
    settings.instances_file.write_text(
        "instances:\n  pmem-yaml:\n    provider: openai\n    model: gpt-4o\n"
        f"    api_key: {IN_YAML}\n  pmem-env:\n    provider: anthropic\n"
        "    model: claude-sonnet-4-6\n    api_key_env: TEST_LEAK_KEY\n"
    )
    monkeypatch.setenv("TEST_LEAK_KEY", IMPLICIT)
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    call = Transcript(client)
    implicit_headers = {
        "X-PowerMem-LLM-Provider": "deepseek",
        "X-PowerMem-LLM-Model": "deepseek-chat",
        "X-PowerMem-LLM-Api-Key": IMPLICIT,
        "X-PowerMem-Client": "codex",
    }

    # Explicit registration, twice, then list and show.
    register = {"provider": "openai", "model": "gpt-4o-mini", "api_key": EXPLICIT}
    response, _ = await call("POST", "/api/v1/instances", json=register)
    explicit_id = response.headers["X-PowerMem-Instance"]
    await call("POST", "/api/v1/instances", json=register)
    # Implicit registration by headers, with bodies, SSE and an upstream error.
    response, _ = await call(
        "POST", "/api/v1/memories", json={"content": "hello"}, headers=implicit_headers
    )
    implicit_id = response.headers["X-PowerMem-Instance"]
    await call("GET", "/sse?pause=0", headers=implicit_headers)
    await call("GET", "/fail?status=500", headers=implicit_headers)
    await call("GET", "/api/v1/memories?q=1", headers={"X-PowerMem-Instance": explicit_id})
    await call("GET", "/api/v1/memories", headers={"X-PowerMem-Instance": "pmem-yaml"})
    # Rotation of the explicit key, then the old and new headers.
    await call("PUT", f"/api/v1/instances/{explicit_id}", json={"api_key": ROTATED})
    await call(
        "GET",
        "/api/v1/memories",
        headers={
            "X-PowerMem-LLM-Provider": "openai",
            "X-PowerMem-LLM-Model": "gpt-4o-mini",
            "X-PowerMem-LLM-Api-Key": ROTATED,
        },
    )
    # Errors that carry a key: each must be refused without repeating it.
    await call("POST", "/api/v1/instances", json=register | {"api_key": REFUSED, "base_url": "x"})
    await call("POST", "/api/v1/instances", json={"provider": "nope", "api_key": REFUSED})
    await call("POST", "/api/v1/instances", json={"api_key": REFUSED, "colour": REFUSED})
    await call("POST", "/api/v1/instances", data=f'{{"api_key": "{REFUSED}"'.encode())
    await call("POST", "/api/v1/instances", data=f'["{REFUSED}"]'.encode())
    await call("PUT", f"/api/v1/instances/{explicit_id}", json={"api_key": REFUSED, "x": 1})
    await call(
        "PUT", f"/api/v1/instances/{implicit_id}", json={"provider": "openai", "api_key": ROTATED}
    )
    await call("PUT", "/api/v1/instances/pmem-yaml", json={"api_key": REFUSED})
    await call(
        "GET",
        "/api/v1/memories",
        headers=implicit_headers | {"X-PowerMem-LLM-Base-Url": f"ftp://{REFUSED}@x"},
    )
    await call(
        "GET",
        "/api/v1/memories",
        headers={"X-PowerMem-LLM-Provider": "skynet", "X-PowerMem-LLM-Api-Key": REFUSED},
    )
    await call("GET", "/api/v1/memories", headers={"X-PowerMem-LLM-Api-Key": REFUSED})
    # What an operator looks at.
    await call("GET", "/api/v1/instances")
    for instance_id in (explicit_id, implicit_id, "pmem-yaml", "pmem-env"):
        await call("GET", f"/api/v1/instances/{instance_id}")
    await call("GET", "/gateway/status")
    await call("DELETE", f"/api/v1/instances/{implicit_id}")

    assert len(recorder.requests) >= 6
    during = private_files(settings.data_dir)
    await client.close()
    after = private_files(settings.data_dir)

    assert {p.name for p in during} >= {
        "registry.sqlite3",
        "registry.sqlite3-wal",
        "master.key",
        "registry.changes",
    }
    for path, content in (during | after).items():
        assert_no_key_in(str(path), content)
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + str(record.args)
        assert_no_key_in(f"log record {record.name}", text.encode())
    assert_no_key_in("log output", caplog.text.encode())
    for n, answer in enumerate(call.seen):
        assert_no_key_in(f"response #{n}", answer)
    for seen in recorder.requests:
        assert_no_key_in(f"upstream request {seen.path_qs}", str(seen.headers).encode() + seen.body)


async def test_data_dir_is_private(
    gateway: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The data dir and its folders are 0700 and every file in it is 0600, whatever the umask."""
    old = os.umask(0o022)
    try:
        headers = {"X-PowerMem-LLM-Provider": "ollama", "X-PowerMem-LLM-Model": "llama3"}
        assert (await gateway.get("/api/v1/memories", headers=headers)).status == 200
        created = await gateway.post("/api/v1/instances", json={"provider": "vllm", "model": "q"})
        assert created.status == 201
        await gateway.close()
    finally:
        os.umask(old)
    data_dir = make_settings().data_dir
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    entries = list(data_dir.rglob("*"))
    assert any(p.name == "registry.sqlite3" for p in entries)
    for path in entries:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"
