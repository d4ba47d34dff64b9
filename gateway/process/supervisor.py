"""`serve`: one socket, one data-dir lock, one managed powermem, N workers.

Order matters. The socket is bound and the data dir locked by the caller before this runs,
so a second gateway fails in milliseconds without touching powermem. Then: the relay token
(made once, before any worker reads it), the run dir with the managed powermem's published
state, the workers (they answer 503 + Retry-After while powermem starts), powermem itself
with a progress line, and once it is up, two checks that say loudly what is wrong: does its
memory service work (`/gateway/ready`), and do its LLM calls reach the relay with baggage
(`/gateway/probe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import time
from typing import Any

import aiohttp

from gateway.errors import GatewayError
from gateway.files import ensure_private_dir
from gateway.http.ready import READY_PATH
from gateway.instances.registry import Registry
from gateway.process.pool import WorkerPool
from gateway.process.progress import Console
from gateway.process.worker import serve_app
from gateway.proxy.managed import ManagedUpstream
from gateway.proxy.upstream import UpstreamStateFile
from gateway.proxy.upstream_env import read_env_file
from gateway.runtime import RUN_DIR_NAME, Runtime
from gateway.settings import Settings
from gateway.tokens import load_relay_token, read_admin_token

__all__ = ["supervise"]

PROBE_PATH = "/gateway/probe"
_TICK = 0.1


async def _call(
    settings: Settings, method: str, path: str, *, seconds: float
) -> tuple[int, dict[str, Any]]:
    token = read_admin_token(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
        session.request(method, settings.local_url + path, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
        return response.status, body if isinstance(body, dict) else {}


async def _check_memory_service(settings: Settings, console: Console) -> bool:
    try:
        status, body = await _call(settings, "GET", READY_PATH, seconds=30)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        console.shout(f"could not ask {READY_PATH} ({type(exc).__name__})")
        return False
    if status == 200:
        return True
    message = (body.get("error") or {}).get("message") or f"HTTP {status}"
    console.shout(f"powermem runs, but memory calls will fail: {message}")
    return False


async def _run_probe(settings: Settings, console: Console) -> None:
    """Call the wiring probe (gateway.http.status); loud when powermem bypasses the relay."""
    # Until the shared ledger lands, a probe whose relay call reaches another worker than
    # the one waiting for it reads as "not wired": ask again before saying so.
    attempts = 1 if settings.workers == 1 else 3
    data: dict[str, Any] = {}
    for _ in range(attempts):
        try:
            status, body = await _call(settings, "POST", PROBE_PATH, seconds=90)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            console.shout(f"the wiring probe failed to run ({type(exc).__name__})")
            return
        if status != 200:
            message = (body.get("error") or {}).get("message") or f"HTTP {status}"
            console.shout(f"the wiring probe could not run: {message}")
            return
        data = body.get("data") or {}
        if data.get("wired"):
            console.say("wiring probe: powermem's LLM calls reach the relay with baggage.")
            return
    console.shout(
        "WIRING PROBE FAILED: powermem's LLM calls do not reach the relay with the request's "
        f"baggage, so every instance would be billed to the .env's LLM. {data.get('detail', '')}"
        " Run `powermem-gateway doctor` for the cause and the fix."
    )


async def _start_managed(managed: ManagedUpstream, console: Console) -> bool:
    starting = asyncio.create_task(managed.start(), name="powermem-start")
    began = time.monotonic()
    while not starting.done():
        console.progress("starting powermem", time.monotonic() - began, managed.last_log_line())
        await asyncio.wait({starting}, timeout=_TICK)
    console.done()
    try:
        starting.result()
    except GatewayError as exc:
        console.shout(exc.message)
        return False
    console.say(f"powermem ready after {time.monotonic() - began:.1f}s (pid {managed.pid}).")
    return True


async def _preflight(settings: Settings) -> None:
    """Open the registry once before any worker does: a lost master key or an unusable store
    is then one clear line from here, not a traceback from every worker. Its warnings (a
    cache it starts without) are left to the workers, which say them as they open it."""
    registry_log = logging.getLogger("gateway.registry")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        await (await Registry.open(settings)).close()
    finally:
        registry_log.setLevel(level)


async def supervise(settings: Settings, socks: list[socket.socket], console: Console) -> int:
    """Run until SIGTERM/SIGINT; the exit code. The caller holds the sockets and the lock."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    run_dir = settings.data_dir / RUN_DIR_NAME
    shutil.rmtree(run_dir, ignore_errors=True)  # whatever a previous serve left: stale now
    ensure_private_dir(run_dir)
    relay_token = load_relay_token(settings)
    await _preflight(settings)
    managed: ManagedUpstream | None = None
    state: UpstreamStateFile | None = None
    if settings.upstream is None:
        state = UpstreamStateFile.create(run_dir)
        managed = ManagedUpstream(
            settings, relay_token=relay_token, env=read_env_file(settings.env_file), state=state
        )
    pool: WorkerPool | None = None
    app_stop = asyncio.Event()
    app_task: asyncio.Task[None] | None = None
    code = 0
    try:
        if settings.workers == 1:
            app_task = asyncio.create_task(
                serve_app(settings, Runtime(0, 1, run_dir), socks[0], app_stop),
                name="gateway-app",
            )
        else:
            pool = WorkerPool(settings, socks, run_dir)
            await pool.start()
        console.say(
            f"listening on {settings.local_url} ({settings.workers} worker"
            f"{'s' if settings.workers > 1 else ''}; upstream "
            f"{settings.upstream or 'managed powermem'})"
        )
        if managed is not None and not await _start_managed(managed, console):
            return 1
        if not stop.is_set() and await _check_memory_service(settings, console):
            console.say(f"ready: memory calls work ({settings.local_url}{READY_PATH}).")
            await _run_probe(settings, console)
        waits: set[asyncio.Task[Any]] = {asyncio.create_task(stop.wait())}
        if app_task is not None:
            waits.add(app_task)
        if pool is not None:
            waits.add(asyncio.create_task(pool.failed.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if app_task is not None and app_task.done() and not stop.is_set():
            app_task.result()  # the app failed: let its error out
        if pool is not None and pool.failed.is_set():
            console.shout("the gateway's workers cannot start; see the errors above.")
            code = 1
    finally:
        console.say("stopping")
        app_stop.set()
        if app_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await app_task
        if pool is not None:
            await pool.stop()
        if managed is not None:
            await managed.stop()
        if state is not None:
            state.close()
    return code
