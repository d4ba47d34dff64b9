"""The processes a benchmark family runs against: the gateway itself and the fake providers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from benchmarks.procs import Proc, free_port

__all__ = [
    "RELAY_TOKEN",
    "Gateway",
    "have_uvloop",
    "start_fake_providers",
    "start_gateway",
]

RELAY_TOKEN = "pgr-benchmark-relay-token-0123456789"

# The gateway's own CLI on uvloop's event loop (the CLI itself uses asyncio's): web.run_app
# makes its loop through the event loop policy.
_WITH_UVLOOP = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from gateway.cli import main; sys.argv[0] = 'powermem-gateway'; main()"
)


def have_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


class Gateway(Proc):
    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str], port: int):
        super().__init__(name, argv, log_dir, env=env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def _clean_env(home: Path) -> dict[str, str]:
    # Nothing of the caller's powermem setup may leak in: own HOME, no POWERMEM_* variables.
    for name in [n for n in os.environ if n.startswith("POWERMEM")]:
        os.environ.pop(name)
    return {"HOME": str(home), "POWERMEM_GATEWAY_RELAY_TOKEN": RELAY_TOKEN}


def start_gateway(
    name: str,
    work: Path,
    upstream: str,
    *,
    data_dir: Path | None = None,
    uvloop: bool = False,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Gateway:
    """`powermem-gateway serve --upstream …` as its own process, with its own data dir."""
    home = work / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    env_file = home / "powermem.env"
    if not env_file.exists():
        # powermem's per-client limit (100/min by default), which the gateway applies per
        # client address, would turn a load test from one address into 429s.
        env_file.write_text("POWERMEM_SERVER_RATE_LIMIT_ENABLED=false\n")
    port = free_port()
    head = [sys.executable, "-c", _WITH_UVLOOP] if uvloop else [sys.executable, "-m", "gateway"]
    argv = [
        *head,
        "serve",
        "--upstream",
        upstream,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir or home / "gateway"),
        "--instances-file",
        str(home / "instances.yaml"),
        "--env-file",
        str(home / "powermem.env"),
        *extra,
    ]
    gateway = Gateway(name, argv, work, _clean_env(home) | (env or {}), port)
    gateway.wait_http(gateway.url + "/gateway/health")
    return gateway


def start_fake_providers(work: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(
        "fake-providers",
        [sys.executable, "-m", "benchmarks.fake_providers", "--port", str(port)],
        work,
    )
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health")
    return proc, url
