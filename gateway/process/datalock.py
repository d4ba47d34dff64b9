"""One gateway per data dir: an exclusive lock, held for the life of `serve`.

Two gateways on one data dir would start two powermem servers on one database and two
relays with one token. The lock is `flock` on `<data_dir>/gateway.lock`, so the kernel
releases it however the holder dies; the file names the holder for the error message.
Commands that only read or change the registry (`instances`, `secret rotate`) do not take it:
the registry is safe for several processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gateway.files import ensure_private_dir
from gateway.process.errors import ServeError

__all__ = ["LOCK_FILE", "DataDirLock"]

LOCK_FILE = "gateway.lock"


class DataDirLock:
    """`with DataDirLock(data_dir):` — raises `ServeError` when another gateway holds it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ServeError(
                f"Another gateway (pid {holder}) is already using the data dir "
                f"{self.path.parent}; stop it, or give this one its own --data-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
