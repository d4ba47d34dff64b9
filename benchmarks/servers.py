"""The processes a benchmark family runs against: the gateway as it ships, and the fakes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.context import ADMIN_TOKEN
from benchmarks.procs import Proc, ProcessTree, clean_environ, free_port

__all__ = [
    "RELAY_TOKEN",
    "Gateway",
    "is_powermem",
    "start_fake_providers",
    "start_gateway",
]

RELAY_TOKEN = "pgr-benchmark-relay-token-0123456789"
# powermem's own per-client limit (100/min) is applied by the gateway per client address and
# route; wrk is one address, so it would measure 429s. Off in every benchmark gateway's .env.
NO_CLIENT_LIMIT = {"POWERMEM_SERVER_RATE_LIMIT_ENABLED": "false"}


def is_powermem(cmdline: str) -> bool:
    """The managed powermem (and its launcher) among a gateway's descendants."""
    return "powermem-server" in cmdline or "gateway.proxy.lifeline" in cmdline


class Gateway(Proc):
    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: dict[str, str], port: int
    ) -> None:
        super().__init__(name, argv, log_dir, env=env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def gateway_tree(self) -> ProcessTree:
        """Supervisor and workers, without a managed powermem."""
        return self.tree(exclude=is_powermem)

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def start_gateway(
    name: str,
    work: Path,
    upstream: str | None,
    *,
    workers: int = 1,
    data_dir: Path | None = None,
    env_file: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 60.0,
    port: int | None = None,
) -> Gateway:
    """`powermem-gateway serve` as its own process tree, with its own data dir.

    `upstream` None runs it managed (the stock powermem-server behind it, from `env_file`).
    `env_file` is the powermem `.env` it reads; `environ` adds POWERMEM_GATEWAY_* variables.
    """
    home = work / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    dotenv = home / "powermem.env"
    dotenv.write_text(
        "".join(f"{k}={v}\n" for k, v in {**NO_CLIENT_LIMIT, **(env_file or {})}.items())
    )
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        *(("--upstream", upstream) if upstream else ()),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--data-dir",
        str(data_dir or home / "gateway"),
        "--instances-file",
        str(home / "instances.yaml"),
        "--env-file",
        str(dotenv),
        *extra,
    ]
    env = clean_environ(
        HOME=str(home),
        POWERMEM_GATEWAY_RELAY_TOKEN=RELAY_TOKEN,
        POWERMEM_GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        **dict(environ or {}),
    )
    gateway = Gateway(name, argv, work, env, port)
    if upstream:
        gateway.wait_http(gateway.url + "/gateway/health", timeout)
    else:
        # Managed: ready once powermem answers a memory call through it.
        gateway.wait_http(gateway.url + "/gateway/ready", timeout, ok_only=True)
    if workers > 1:
        _wait_workers(gateway, workers, timeout)
    return gateway


def _wait_workers(gateway: Gateway, workers: int, timeout: float) -> None:
    # The port answers as soon as one worker listens; measure only once all of them do.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(gateway.gateway_tree().pids()) >= workers + 1:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{gateway.name}: {workers} workers did not start")


def start_fake_providers(
    work: Path, *, ports: int = 0, embedding_dims: int = 64
) -> tuple[Proc, str, list[int]]:
    """The fake providers' process, its main URL, and `ports` more ports it also serves."""
    port = free_port()
    ports_file = work / f"fake-providers-{port}.ports"
    proc = Proc(
        f"fake-providers-{port}",
        [
            sys.executable,
            "-m",
            "benchmarks.fake_providers",
            "--port",
            str(port),
            "--extra-ports",
            str(ports),
            "--ports-file",
            str(ports_file),
            "--embedding-dims",
            str(embedding_dims),
        ],
        work,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health")
    extra: list[int] = []
    if ports:
        deadline = time.monotonic() + 30
        while not ports_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        extra = json.loads(ports_file.read_text())
    return proc, url, extra
