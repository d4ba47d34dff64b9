"""Run `powermem-gateway serve` as a user would: a real process, a fresh HOME, a real powermem."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp

from tests.conftest import REPO_ROOT, free_port

__all__ = ["Serve", "alive", "start_serve"]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Serve:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, home: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.home = home
        self.url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, path: str, status: int = 200, seconds: float = 90) -> None:
        """Poll `path` until it answers `status` (the process must stay up meanwhile)."""
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"serve exited ({self.proc.returncode}):\n{self.output()}")
                try:
                    async with session.get(self.url + path) as response:
                        if response.status == status:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{path} never answered {status}:\n{self.output()}")

    async def wait_output(self, text: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.output():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"never printed {text!r}:\n{self.output()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_serve(
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    log: Path | None = None,
) -> Serve:
    """`python -m gateway serve ARGS` with HOME=home and only the variables given."""
    port = port or free_port()
    log = log or home.parent / f"serve-{port}.log"
    environ = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "HOME": str(home),
        "POWERMEM_GATEWAY_PORT": str(port),
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=environ,
        )
    return Serve(proc, port, log, home)
