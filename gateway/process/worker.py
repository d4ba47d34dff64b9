"""Serve the app on an already-listening socket; the body of every `serve` worker.

    python -m gateway.process.worker FD WORKER WORKERS RUN_DIR   # settings as JSON on stdin

With `--workers 1` the supervisor calls `serve_app` in its own process; with more, it starts
this module once per worker, passing the listening socket as FD. The worker's stdin stays
open for its whole life: end-of-file there means the supervisor is gone (however it died),
and the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from aiohttp import web

from gateway.front.runner import GatewayRunner
from gateway.front.server import FrontServer
from gateway.http.app import create_app
from gateway.observe.logs import configure_logging
from gateway.process.collector import full_collections, take_over
from gateway.process.loop import run
from gateway.runtime import Runtime
from gateway.settings import Settings

__all__ = ["SHUTDOWN_TIMEOUT", "main", "serve_app"]

log = logging.getLogger("gateway.worker")

# Seconds open requests get to finish when the gateway stops (streams are cut after).
SHUTDOWN_TIMEOUT = 10.0


async def serve_app(
    settings: Settings, runtime: Runtime, sock: socket.socket, stop: asyncio.Event
) -> None:
    """Run the app on `sock` until `stop` is set, then close it cleanly."""
    runner = GatewayRunner(
        create_app(settings, runtime),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    front = cast(FrontServer, runner.server)
    take_over()
    collecting = asyncio.create_task(full_collections(lambda: front.in_flight > 0))
    try:
        await web.SockSite(runner, sock).start()
        await stop.wait()
    finally:
        collecting.cancel()
        await runner.cleanup()


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("worker got %s; stopping", sig.name)
        stop.set()

    return handler


def _watch_lifeline(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def readable() -> None:
        try:
            gone = os.read(0, 64) == b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            gone = True
        if gone:
            log.warning("the supervisor is gone (stdin closed); stopping worker")
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, readable)


async def _run(settings: Settings, runtime: Runtime, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(stop, sig))
    _watch_lifeline(loop, stop)
    await serve_app(settings, runtime, sock, stop)


def main(argv: list[str]) -> int:
    fd, worker, workers, run_dir = argv
    settings = Settings(**json.loads(sys.stdin.readline()))
    os.umask(0o077)
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(worker=int(worker), workers=int(workers), run_dir=Path(run_dir))
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(False)
    with contextlib.suppress(KeyboardInterrupt):
        run(_run(settings, runtime, sock), settings.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
