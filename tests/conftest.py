"""Shared fixtures: a clean environment, a gateway in front of a recording upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import settings as hypothesis_settings

from gateway.http.app import create_app
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.fakes.upstream import RECORDER, Recorder, make_upstream
from tests.frontserver import GatewayTestServer

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_ADMIN_PATHS = ("/api/v1/instances", "/metrics", "/gateway/status", "/gateway/probe")

# Property and fuzz tests are reproducible: the same examples on every run and machine.
hypothesis_settings.register_profile(
    "gateway", derandomize=True, deadline=None, database=None, print_blob=True
)
hypothesis_settings.load_profile("gateway")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No POWERMEM_* leaks in from the machine, and HOME is a fresh temporary folder."""
    for name in list(os.environ):
        if name.startswith(("POWERMEM_", "OTEL_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield home


@pytest.fixture
async def upstream(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(make_upstream())
    return server


@pytest.fixture
def recorder(upstream: TestServer) -> Recorder:
    return upstream.app[RECORDER]


@pytest.fixture
def make_settings(tmp_path: Path, upstream: TestServer) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "instances_file": tmp_path / "instances.yaml",
            "upstream": str(upstream.make_url("")).rstrip("/"),
            "admin_token": ADMIN_TOKEN,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def needs_admin(method: str, path: str) -> bool:
    """Whether a call is one the gateway keeps for the admin token holder."""
    path = path.split("?")[0]
    if path == "/api/v1/instances" and method.upper() == "POST":
        return False
    return path.startswith(_ADMIN_PATHS)


class OperatorClient(TestClient[web.Request, web.Application]):
    """A test client that, like the operator's CLI, sends the admin token on admin calls only
    (never on registration or on proxied paths, where it would reach powermem)."""

    async def _request(self, method: str, path: Any, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        if needs_admin(method, str(path)) and "Authorization" not in headers:
            headers.update(ADMIN_AUTH)
        return await super()._request(method, path, headers=headers, **kwargs)


OperatorFactory = Callable[[web.Application], Awaitable[OperatorClient]]


@pytest.fixture
async def operator() -> AsyncIterator[OperatorFactory]:
    """`await operator(app)`: an `OperatorClient` on the whole gateway (front and app)."""
    started: list[OperatorClient] = []

    async def start(app: web.Application) -> OperatorClient:
        client = OperatorClient(GatewayTestServer(app))
        await client.start_server()
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close()


@pytest.fixture
async def gateway(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> AsyncIterator[OperatorClient]:
    """The gateway in front of the recording upstream, called the way its operator would."""
    yield await operator(create_app(make_settings()))


@pytest.fixture
async def gateway_server() -> AsyncIterator[Callable[..., Awaitable[GatewayTestServer]]]:
    """`await gateway_server(app, port=…)`: the whole gateway on a loopback port, like
    `aiohttp_server` but through the front; closed at teardown."""
    started: list[GatewayTestServer] = []

    async def start(app: web.Application, *, port: int | None = None) -> GatewayTestServer:
        server = GatewayTestServer(app, port=port)
        await server.start_server()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.close()


# -- fixtures for the core suite (registry, real gateway processes) ----------------------------


@pytest.fixture
async def registry(make_settings: Callable[..., Settings]) -> AsyncIterator[Registry]:
    """A registry opened on the test's data dir and instances file, closed at teardown."""
    opened = await Registry.open(make_settings())
    yield opened
    await opened.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """A real `python -m gateway serve` child process on a loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """`kill -9`: no cleanup, no flush, no goodbye."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # a worker's lifeline

    async def wait_healthy(self) -> GatewayProcess:
        """Poll `/gateway/health` until it answers (20 s at most)."""
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited early:\n{self.output()}")
                try:
                    async with session.get(self.url + "/gateway/health") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.output()}")


SpawnGateway = Callable[..., GatewayProcess]
SpawnWorkers = Callable[..., list[GatewayProcess]]
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spawn_gateway(tmp_path: Path) -> Iterator[SpawnGateway]:
    """Start real gateway processes (`python -m gateway serve …`); all stopped at teardown.

    `spawn_gateway(upstream=…, data_dir=…)` returns at once; `await p.wait_healthy()` next.
    One worker unless `extra` says otherwise, so what a test sees does not depend on which
    worker the kernel hands a connection to.
    """
    started: list[GatewayProcess] = []

    def spawn(*, upstream: str, data_dir: Path, extra: tuple[str, ...] = ()) -> GatewayProcess:
        port = free_port()
        log = tmp_path / f"gateway-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--port",
                    str(port),
                    "--upstream",
                    upstream,
                    "--data-dir",
                    str(data_dir),
                    "--instances-file",
                    str(tmp_path / "instances.yaml"),
                    *(() if "--workers" in extra else ("--workers", "1")),
                    *extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        process = GatewayProcess(proc, port, log)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.stop()


@pytest.fixture
def spawn_workers(tmp_path: Path) -> Iterator[SpawnWorkers]:
    """The worker processes of one `serve --workers N`, each on its own port so a test can
    address each one: `spawn_workers(n, upstream=…, data_dir=…)`; stopped at teardown."""
    started: list[GatewayProcess] = []

    def spawn(n: int, *, upstream: str, data_dir: Path) -> list[GatewayProcess]:
        settings = Settings(
            upstream=upstream, data_dir=data_dir, instances_file=tmp_path / "instances.yaml"
        )
        processes = []
        for worker in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            port = sock.getsockname()[1]
            log = tmp_path / f"worker-{port}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gateway.process.worker",
                        str(sock.fileno()),
                        str(worker),
                        str(n),
                        str(data_dir / "run"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    pass_fds=(sock.fileno(),),
                )
            sock.close()
            assert proc.stdin is not None
            proc.stdin.write(settings.model_dump_json().encode() + b"\n")
            proc.stdin.flush()
            processes.append(GatewayProcess(proc, port, log))
        started.extend(processes)
        return processes

    yield spawn
    for process in started:
        process.stop()
