"""Where the powermem server is: a fixed URL (`--upstream`), the managed child process, or
(in the workers of one `serve`) the state the supervisor publishes about its managed child.

The published state is a 32-byte file in the run dir, mapped into memory by every worker and
written by the supervisor under a sequence counter (odd while a write is under way), so
reading `url` costs a few hundred nanoseconds and never sees half a change.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import UpstreamStarting

__all__ = [
    "STATE_FILE",
    "SharedUpstream",
    "StaticUpstream",
    "Upstream",
    "UpstreamState",
    "UpstreamStateFile",
]

STATE_FILE = "upstream.state"
# seq, ready, port, pid, restarts, retry_after, spare
_LAYOUT = struct.Struct("<QIIIIII")
_SIZE = 32


class Upstream(Protocol):
    @property
    def url(self) -> str:
        """The base URL to forward to; raises `UpstreamStarting` while there is none."""
        ...

    @property
    def own_headers(self) -> Mapping[str, str]:
        """Headers for the gateway's own calls to powermem (its API key when its auth is on)."""
        ...


class StaticUpstream:
    """An external powermem server the operator runs (`serve --upstream URL`)."""

    def __init__(self, url: str, *, own_headers: Mapping[str, str] | None = None) -> None:
        self._url = url.rstrip("/")
        self.own_headers: Mapping[str, str] = dict(own_headers or {})

    @property
    def url(self) -> str:
        return self._url


@dataclass(frozen=True)
class UpstreamState:
    ready: bool = False
    port: int = 0
    pid: int = 0
    restarts: int = 0
    retry_after: int = 1


def _starting(retry_after: int) -> UpstreamStarting:
    return UpstreamStarting(
        "The powermem server is starting; retry in a few seconds.",
        headers={"Retry-After": str(max(1, retry_after))},
    )


class UpstreamStateFile:
    """The shared state file: `create` (supervisor), `open` (workers), `read`, `write`."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = path
        flags = os.O_RDWR if writable else os.O_RDONLY
        fd = os.open(path, flags)
        try:
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            self._map = mmap.mmap(fd, _SIZE, access=access)
        finally:
            os.close(fd)
        self._seq = _LAYOUT.unpack_from(self._map)[0] if writable else 0

    @classmethod
    def create(cls, run_dir: Path) -> UpstreamStateFile:
        path = run_dir / STATE_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(_SIZE))
        finally:
            os.close(fd)
        return cls(path, writable=True)

    @classmethod
    def open(cls, run_dir: Path) -> UpstreamStateFile:
        return cls(run_dir / STATE_FILE, writable=False)

    def write(self, state: UpstreamState) -> None:
        self._seq += 1  # odd: a write is under way
        _LAYOUT.pack_into(self._map, 0, self._seq, 0, 0, 0, 0, 0, 0)
        _LAYOUT.pack_into(
            self._map,
            0,
            self._seq,
            int(state.ready),
            state.port,
            state.pid,
            state.restarts,
            state.retry_after,
            0,
        )
        self._seq += 1
        struct.pack_into("<Q", self._map, 0, self._seq)

    def read(self) -> UpstreamState:
        while True:
            seq, ready, port, pid, restarts, retry_after, _ = _LAYOUT.unpack_from(self._map)
            if seq % 2 == 0 and struct.unpack_from("<Q", self._map)[0] == seq:
                return UpstreamState(bool(ready), port, pid, restarts, retry_after)

    def close(self) -> None:
        self._map.close()


class SharedUpstream:
    """The managed powermem of this `serve`, as its supervisor publishes it."""

    def __init__(self, run_dir: Path, *, own_headers: Mapping[str, str] | None = None) -> None:
        self._file = UpstreamStateFile.open(run_dir)
        self.own_headers: Mapping[str, str] = dict(own_headers or {})

    @property
    def state(self) -> UpstreamState:
        return self._file.read()

    @property
    def url(self) -> str:
        state = self._file.read()
        if not state.ready:
            raise _starting(state.retry_after)
        return f"http://127.0.0.1:{state.port}"

    @property
    def ready(self) -> bool:
        return self._file.read().ready

    @property
    def pid(self) -> int | None:
        return self._file.read().pid or None

    @property
    def restarts(self) -> int:
        return self._file.read().restarts

    def close(self) -> None:
        self._file.close()
