"""Run the stock powermem-server as a child process: start, watch, restart, stop.

The child runs as `opentelemetry-instrument powermem-server --host 127.0.0.1 --port N
--no-open-browser` under `gateway.proxy.lifeline`, in its own process group (so uvicorn
workers die with it), with the environment of `upstream_env.upstream_environment`, in
`<data_dir>/upstream` (a directory we own: `opentelemetry-instrument` puts the cwd first on
PYTHONPATH, and powermem looks for a `.env` and writes relative log paths there). Its output
goes to `<data_dir>/upstream.log`.

It dies with the gateway however the gateway dies: the launcher holds the read end of a pipe
whose write end only the gateway has, and stops the group when that pipe closes. A group an
earlier gateway left running anyway is found through the pid file and stopped first
(`gateway.proxy.stale`). With a `UpstreamStateFile`, every change of state is published for
the workers of the same `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from gateway.errors import UpstreamStarting, UpstreamUnavailable
from gateway.files import write_private_file_once
from gateway.proxy import stale
from gateway.proxy.upstream import UpstreamState, UpstreamStateFile
from gateway.proxy.upstream_env import is_replaced_setting, own_headers, upstream_environment
from gateway.settings import Settings

__all__ = ["HEALTH_PATH", "ManagedUpstream", "free_port"]

log = logging.getLogger(__name__)

HEALTH_PATH = "/api/v1/system/health"
_LOG_MAX_BYTES = 10 * 1024 * 1024
_FIRST_BACKOFF = 0.5
_STABLE_AFTER = 60.0
# Settings that name files; relative ones are resolved against the gateway's own cwd, where a
# user running `powermem-server` by hand would have had them.
_PATH_SETTINGS = ("SQLITE_PATH", "OCEANBASE_PATH", "GRAPH_STORE_PATH")
_WORKDIR_ENV = (
    "# Left empty by powermem-gateway on purpose: the managed powermem gets its settings\n"
    "# from its environment (see gateway/proxy/upstream_env.py), not from a .env.\n"
)
_OPENAI_FALLBACKS = ("OPENAI_BASE_URL", "OPENAI_API_BASE")
_SECRET_HINTS = ("KEY", "TOKEN", "PASSWORD", "SECRET")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedUpstream:
    """One powermem-server child process and its lifecycle."""

    def __init__(
        self,
        settings: Settings,
        *,
        relay_token: str,
        env: Mapping[str, str],
        relay_url: str | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        max_backoff: float = 30.0,
        state: UpstreamStateFile | None = None,
    ) -> None:
        """`env` is the user's `.env` (see `read_env_file`); `relay_url` defaults to ours."""
        self._settings = settings
        self._state = state
        self._workdir = settings.data_dir / "upstream"
        self.log_path = settings.data_dir / "upstream.log"
        # The OpenAI fallbacks may come from the shell rather than the .env (see
        # upstream_environment): the embedder keeps using them, powermem's LLM never does.
        inherited = {k: os.environ[k] for k in _OPENAI_FALLBACKS if os.environ.get(k)}
        upstream = upstream_environment(
            {**inherited, **env},
            relay_url=relay_url or settings.relay_url,
            relay_token=relay_token,
            data_dir=settings.data_dir,
        )
        for name in _PATH_SETTINGS:
            if (value := upstream.get(name)) and not Path(value).expanduser().is_absolute():
                upstream[name] = str(Path.cwd() / value)
        self._env = self._child_environment(upstream)
        # powermem reads its auth settings from this same environment.
        self.own_headers: Mapping[str, str] = own_headers(self._env)
        self._secrets = [v for k, v in upstream.items() if len(v) >= 6 and _is_secret(k)]
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.max_backoff = max_backoff
        self.restarts = 0
        self._port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._ready = False
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._backoff = _FIRST_BACKOFF
        self._ready_since = 0.0
        self._lifeline: int | None = None
        self.starting_since: float | None = None

    @staticmethod
    def _child_environment(upstream: Mapping[str, str]) -> dict[str, str]:
        # Our process environment minus anything that would re-aim powermem's LLM or hand it
        # the gateway's own secrets; the venv's bin first so `opentelemetry-instrument` finds
        # `powermem-server` when the gateway was started as `venv/bin/python -m gateway`.
        env = {
            k: v
            for k, v in os.environ.items()
            if not is_replaced_setting(k)
            and not k.startswith("POWERMEM_GATEWAY_")
            and k != "POWERMEM_ENV_FILE"
        }
        env.update(upstream)
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
        return env

    @property
    def ready(self) -> bool:
        return self._ready and self._proc is not None and self._proc.returncode is None

    @property
    def url(self) -> str:
        """Base URL of the running server; `UpstreamStarting` while it is (re)starting."""
        if not self.ready:
            raise UpstreamStarting(
                "The powermem server is starting; retry in a few seconds.",
                headers={"Retry-After": str(max(1, round(self._backoff)))},
            )
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        """Spawn the server, wait until it is healthy, then watch it (restart if it dies).

        A server an earlier gateway left running on this data dir is stopped first.
        """
        self._stopping = False
        self._publish()
        await asyncio.to_thread(stale.stop_stale, self._settings.data_dir)
        await self._spawn_and_wait()
        self._watcher = asyncio.create_task(self._watch(), name="powermem-upstream-watcher")

    async def stop(self) -> None:
        """SIGTERM the process group, wait, SIGKILL what is left."""
        self._stopping = True
        self._ready = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._terminate()

    async def __aenter__(self) -> ManagedUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _publish(self) -> None:
        if self._state is not None:
            self._state.write(
                UpstreamState(
                    ready=self.ready,
                    port=self._port,
                    pid=self.pid or 0,
                    restarts=self.restarts,
                    retry_after=max(1, round(self._backoff)),
                )
            )

    def _command(self, lifeline: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway.proxy.lifeline",
            str(lifeline),
            str(self.stop_timeout),
            "--",
            "opentelemetry-instrument",
            *shlex.split(self._settings.powermem_command),
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
            "--no-open-browser",
        ]

    def _open_log(self) -> int:
        self._settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            if self.log_path.stat().st_size > _LOG_MAX_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    async def _spawn_and_wait(self) -> None:
        self._ready = False
        self._port = free_port()
        self._workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # powermem loads the first .env it finds (cwd, then ~/.powermem/.env) into its
        # environment; one here, empty, keeps the user's file from re-adding what
        # upstream_environment took out (OPENAI_BASE_URL would divert its LLM calls).
        write_private_file_once(self._workdir / ".env", _WORKDIR_ENV)
        fd = self._open_log()
        started = self.starting_since = time.monotonic()
        self._close_lifeline()
        read_end, self._lifeline = os.pipe()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self._command(read_end),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                env=self._env,
                cwd=self._workdir,
                start_new_session=True,
                pass_fds=(read_end,),
            )
        except OSError as exc:
            raise UpstreamUnavailable(
                f"Could not start the powermem server ({exc.strerror}); install it with: "
                "pip install -e '.[managed]' (from the gateway's checkout)."
            ) from None
        finally:
            os.close(fd)
            os.close(read_end)
        stale.record(self._settings.data_dir, self._proc.pid)
        self._publish()
        await self._wait_healthy(started)
        self._ready = True
        self.starting_since = None
        self._ready_since = time.monotonic()
        self._publish()
        log.info(
            "powermem server ready on port %d (pid %d) after %.1fs",
            self._port,
            self._proc.pid,
            time.monotonic() - started,
        )

    async def _wait_healthy(self, started: float) -> None:
        assert self._proc is not None
        url = f"http://127.0.0.1:{self._port}{HEALTH_PATH}"
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() - started < self.startup_timeout:
                if self._proc.returncode is not None:
                    code = self._proc.returncode
                    await self._terminate()
                    raise UpstreamUnavailable(
                        f"The powermem server exited with code {code} while "
                        f"starting. Last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self._terminate()
        raise UpstreamUnavailable(
            f"The powermem server did not become healthy within {self.startup_timeout:.0f}s. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def last_log_line(self) -> str:
        """What powermem said last (the message of a JSON log line), for progress displays."""
        for line in reversed(self.log_tail(5).splitlines()):
            line = line.strip()
            if not line:
                continue
            with contextlib.suppress(ValueError):
                record: Any = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("message"), str):
                    return str(record["message"])
            return line
        return ""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, with known secrets blanked out."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
                text = fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return "\n".join(text.splitlines()[-lines:])

    async def _watch(self) -> None:
        while not self._stopping:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self._ready = False
            self._publish()
            await self._terminate()  # its workers may outlive it
            if time.monotonic() - self._ready_since > _STABLE_AFTER:
                self._backoff = _FIRST_BACKOFF  # a crash after a good run is not a crash loop
            log.warning("powermem server exited with code %s; restarting", code)
            while not self._stopping:
                await asyncio.sleep(self._backoff)
                self._backoff = min(self.max_backoff, self._backoff * 2)
                self.restarts += 1
                self._publish()
                try:
                    await self._spawn_and_wait()
                    break
                except UpstreamUnavailable as exc:
                    log.error("powermem server restart failed: %s", exc.message)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal_group(proc.pid, signal.SIGTERM)
        # asyncio.TimeoutError, not TimeoutError: they differ on Python 3.10.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        if proc.returncode is None:
            log.warning("powermem server ignored SIGTERM for %.0fs; killing it", self.stop_timeout)
        self._signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        self._close_lifeline()
        stale.forget(self._settings.data_dir)
        self._publish()

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _is_secret(name: str) -> bool:
    upper = name.upper()
    return any(hint in upper for hint in _SECRET_HINTS)
