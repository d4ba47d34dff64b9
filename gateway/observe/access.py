"""Access lines: one per request, built by hand and written in batches.

The one function both the aiohttp middleware and the front call for every request:
`write(method, path, status, duration_ms, instance_id, client, remote, route)`. The path is
redacted here (a scoped URL's secret, a key pasted into a path), so no caller can forget it.

Through `logging` a line cost 35–40 µs and one `write()` per request (issue 14). `serve`
installs an `AccessWriter` (`configure`): the line is formatted directly (the same JSON or
text the formatters of `gateway.observe.logs` produce) and lines are joined and written
together when `MAX_BATCH` are pending or `MAX_DELAY` seconds after the first, and at exit.
Without a writer (the gateway used as a library, tests) lines go to the `gateway.access`
logger as before.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import threading
import time
from typing import Literal, TextIO

from gateway.observe.redaction import redact

__all__ = ["DISABLED", "MAX_BATCH", "MAX_DELAY", "AccessWriter", "access_log", "configure", "write"]

access_log = logging.getLogger("gateway.access")

MAX_BATCH = 64
MAX_DELAY = 0.05
_quote = json.encoder.encode_basestring  # the C encoder json.dumps uses


def _json_str(value: str | None) -> str:
    return "null" if value is None else str(_quote(value))


class AccessWriter:
    """Formats access lines itself and writes them to `stream` in batches."""

    def __init__(
        self,
        stream: TextIO,
        fmt: Literal["json", "text"] = "json",
        *,
        max_batch: int = MAX_BATCH,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            pattern = "%Y-%m-%dT%H:%M:%S" if self.fmt == "json" else "%Y-%m-%d %H:%M:%S"
            self._stamp = time.strftime(pattern, time.gmtime(second))
        millis = int((now - second) * 1000)
        return (
            f"{self._stamp}.{millis:03d}Z" if self.fmt == "json" else f"{self._stamp},{millis:03d}"
        )

    def line(
        self,
        method: str,
        path: str,
        status: int,
        duration_ms: float,
        instance_id: str | None,
        client: str | None,
        remote: str | None,
        route: str,
        now: float,
    ) -> str:
        """One formatted line, byte for byte what the logging formatters would write."""
        if self.fmt == "text":
            return (
                f"{self._timestamp(now)} INFO gateway.access {method} {path} {status} "
                f"method={method} path={path} status={status} duration_ms={duration_ms} "
                f"instance_id={instance_id} client={client} remote={remote} route={route}"
            )
        method_s, path_s = _quote(method), _quote(path)
        return (
            f'{{"ts": "{self._timestamp(now)}", "level": "INFO", "logger": "gateway.access", '
            f'"msg": {_quote(f"{method} {path} {status}")}, "method": {method_s}, '
            f'"path": {path_s}, "status": {status}, "duration_ms": {duration_ms!r}, '
            f'"instance_id": {_json_str(instance_id)}, "client": {_json_str(client)}, '
            f'"remote": {_json_str(remote)}, "route": {_quote(route)}}}'
        )

    def add(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            full = len(self._pending) >= self.max_batch
        if full:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop here (CLI, a thread): no batching
                self.flush()
                return
            self._timer = loop.call_later(self.max_delay, self.flush)

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stderr must not fail the request it describes


class _Disabled(AccessWriter):
    """Access lines switched off (a log level above INFO)."""

    def add(self, line: str) -> None:
        return


DISABLED: AccessWriter = _Disabled(sys.stderr)
_writer: AccessWriter | None = None


def configure(writer: AccessWriter | None) -> None:
    """Install the direct writer (None: back to logging); what was pending is written first."""
    global _writer
    if _writer is not None:
        _writer.flush()
    _writer = writer


@atexit.register
def _flush_at_exit() -> None:
    if _writer is not None:
        _writer.flush()


def write(
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    instance_id: str | None,
    client: str | None,
    remote: str | None,
    route: str,
) -> None:
    """Record one answered request. `path` without its query (it may carry anything)."""
    writer = _writer
    if writer is DISABLED:
        return
    if writer is not None:
        line = writer.line(
            method,
            redact(path),
            status,
            duration_ms,
            instance_id,
            client or None,
            remote,
            route,
            time.time(),
        )
        writer.add(line)
        return
    if not access_log.isEnabledFor(logging.INFO):
        return
    safe = redact(path)
    # The formatters trust access lines (their path is redacted here) and skip their scan.
    access_log.info(
        "%s %s %d",
        method,
        safe,
        status,
        extra={
            "method": method,
            "path": safe,
            "status": status,
            "duration_ms": duration_ms,
            "instance_id": instance_id,
            "client": client or None,
            "remote": remote,
            "route": route,
        },
    )
