"""The worker processes of `serve --workers N`: start, watch, restart, stop.

Each worker is `python -m gateway.process.worker` with the listening socket passed as a file
descriptor (the kernel spreads connections over the processes accepting on it) and the
settings written as JSON to its stdin, which stays open as its lifeline: secrets never
appear on a command line, and a worker whose supervisor died stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from gateway.settings import Settings

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
# A worker that exits this soon after starting, this many times in a row, cannot start.
_QUICK_EXIT = 5.0
_GIVE_UP_AFTER = 3


class WorkerPool:
    def __init__(self, settings: Settings, socks: list[socket.socket], run_dir: Path) -> None:
        self._settings = settings
        # One listening socket per worker (a reuseport group), or one shared by all.
        self._socks = socks
        self._run_dir = run_dir
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self.restarts = 0
        # Set when workers keep dying right after starting: restarting will not help.
        self.failed = asyncio.Event()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values()]

    async def _spawn(self, worker: int) -> asyncio.subprocess.Process:
        fd = self._socks[worker % len(self._socks)].fileno()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.process.worker",
            str(fd),
            str(worker),
            str(self._settings.workers),
            str(self._run_dir),
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
        )
        assert proc.stdin is not None
        proc.stdin.write(self._settings.model_dump_json().encode() + b"\n")
        await proc.stdin.drain()
        self._procs[worker] = proc
        return proc

    async def start(self) -> None:
        for worker in range(self._settings.workers):
            await self._spawn(worker)
        self._watchers = [
            asyncio.create_task(self._watch(w), name=f"gateway-worker-{w}") for w in self._procs
        ]

    async def _watch(self, worker: int) -> None:
        attempt = 0
        while not self._stopping:
            began = time.monotonic()
            code = await self._procs[worker].wait()
            if self._stopping:
                return
            quick = time.monotonic() - began < _QUICK_EXIT
            if quick and attempt + 1 >= _GIVE_UP_AFTER:
                log.error("gateway worker %d keeps exiting (code %s); giving up", worker, code)
                self.failed.set()
                return
            attempt = attempt if quick else 0
            delay = _RESTART_BACKOFF[min(attempt, len(_RESTART_BACKOFF) - 1)]
            log.error("gateway worker %d exited with code %s; restarting it", worker, code)
            await asyncio.sleep(delay)
            attempt += 1
            self.restarts += 1
            with contextlib.suppress(OSError):
                await self._spawn(worker)

    async def stop(self, grace: float = 15.0) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
