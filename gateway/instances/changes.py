"""Which instances changed, told to every process on the data dir through one small file.

`registry.changes` (0600, fixed size) holds a change counter and a ring of the last `SLOTS`
changed keys (`i:<instance id>`, `c:<config digest>`, or `*` for "everything"). Every
process caches records in memory (gateway.instances.cache) and, before serving one, reads the
counter: one 16-byte `pread` plus an `fstat`, about 1.5 µs, the same at 10 or 100 000
instances. When it moved, the keys named in the ring since the last look are dropped (all of
them if the ring has wrapped).

Why this is enough for "a change answered by one process is never served stale by another":

- writers hold an exclusive `flock` on this file from *before* they announce until *after*
  their database transaction ends, and announce (slots, then counter) inside the
  transaction, before it commits. A writer killed at any point has announced already, or has
  committed nothing, and the kernel drops its lock.
- readers that fill a cache miss hold a shared `flock` while they read the counter and the
  database row, so no change can be announced between the two; the fill lands (on the event
  loop) only if the counter has not moved since.

Reading with `pread` rather than `mmap` keeps a truncated file from killing the process with
SIGBUS. A deleted or replaced file is noticed by the `fstat` (no links left) and reopened;
a corrupt one is replaced. While the file cannot be used, every lookup goes to the database.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from gateway.errors import StorageError
from gateway.files import ensure_private_file

__all__ = ["ALL", "CHANGES_FILE", "SLOTS", "ChangeLog"]

log = logging.getLogger("gateway.registry")

CHANGES_FILE = "registry.changes"
MAGIC = b"PMGWCHG1"
HEADER = 64
SLOTS = 2048  # the ring: a reader more than this many changes behind drops everything
SLOT = 80  # u64 sequence number, u8 length, key (at most 71 bytes)
SIZE = HEADER + SLOTS * SLOT
ALL = "*"
_SLOT = struct.Struct("<QB71s")


class ChangeLog:
    """The change file of one data dir, as one process sees it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CHANGES_FILE
        self._fd: int | None = None
        self._locked: int | None = None  # the descriptor we hold LOCK_EX on
        # The counter as the last `exclusive()` block left it, read under its lock.
        self.written_at: int | None = None
        self._warned = False
        # Descriptors replaced by `reopen`, closed only at `close`: another thread may still be
        # reading one, and a number closed under it could be reused for some other file.
        self._retired: list[int] = []  # bounded: see `reopen`
        self.reopen()

    def close(self) -> None:
        for fd in [*self._retired, *([self._fd] if self._fd is not None else [])]:
            with suppress(OSError):
                os.close(fd)
        self._retired.clear()
        self._fd = None

    @property
    def usable(self) -> bool:
        return self._fd is not None

    # -- opening ---------------------------------------------------------------------------

    def reopen(self) -> None:
        """(Re)open the file at our path, creating or replacing it when needed."""
        if self._fd is not None:
            self._retired.append(self._fd)
            self._fd = None
            if len(self._retired) > 16:
                os.close(self._retired.pop(0))
        try:
            self._fd = self._open()
        except OSError as exc:
            if not self._warned:
                log.warning(
                    "%s cannot be used (%s); every lookup reads the registry until it can",
                    CHANGES_FILE,
                    exc.strerror or exc,
                )
                self._warned = True
            return
        if self._warned:
            log.warning("%s is usable again; lookups are cached again", CHANGES_FILE)
            self._warned = False

    def _open(self) -> int:
        for _ in range(3):
            with suppress(FileNotFoundError):
                ensure_private_file(self.path, "change counter")
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                if self._valid(fd):
                    return fd
                os.close(fd)
                log.warning("%s was damaged; replacing it", CHANGES_FILE)
                self._create(replace=True)
                continue
            self._create(replace=False)
        raise OSError(0, f"{CHANGES_FILE} keeps changing under us")

    @staticmethod
    def _valid(fd: int) -> bool:
        return os.fstat(fd).st_size == SIZE and os.pread(fd, 8, 0) == MAGIC

    def _create(self, *, replace: bool) -> None:
        """A fresh file, fully allocated (no SIGBUS or ENOSPC later), put in place atomically."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{CHANGES_FILE}.")
        try:
            os.posix_fallocate(fd, 0, SIZE)
            # A random start: a process still holding a replaced file's counter can never
            # mistake this file's counter for "nothing changed".
            start = secrets.randbelow(2**62) + 2**32
            os.pwrite(fd, MAGIC + start.to_bytes(8, "little"), 0)
            os.fsync(fd)
            if replace:
                os.replace(tmp, self.path)
            else:
                with suppress(FileExistsError):  # another process made it first: use theirs
                    os.link(tmp, self.path)
        finally:
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(tmp)

    def check(self) -> int | None:
        """Our descriptor if it is still the file at our path, else the reopened one."""
        fd = self._fd
        if fd is not None:
            try:
                if os.fstat(fd).st_nlink > 0 and self._valid(fd):
                    return fd
            except OSError:
                pass
        self.reopen()
        return self._fd

    # -- reading (every lookup) --------------------------------------------------------------

    def read(self) -> int | None:
        """The change counter, or None when the file cannot be trusted right now."""
        return self._counter(self._fd)

    @staticmethod
    def _counter(fd: int | None) -> int | None:
        if fd is None:
            return None
        try:
            head = os.pread(fd, 16, 0)
            linked = os.fstat(fd).st_nlink
        except OSError:
            return None
        if linked == 0 or head[:8] != MAGIC or len(head) != 16:
            return None
        return int.from_bytes(head[8:], "little")

    def since(self, seen: int, now: int) -> set[str] | None:
        """The keys changed after `seen` up to `now`; None means "assume everything"."""
        if now < seen or now - seen > SLOTS or self._fd is None:
            return None
        first, count = (seen + 1) % SLOTS, now - seen
        spans = [(first, min(count, SLOTS - first))]
        if spans[0][1] < count:
            spans.append((0, count - spans[0][1]))
        keys: set[str] = set()
        expected = seen + 1
        try:
            for start, length in spans:
                raw = os.pread(self._fd, length * SLOT, HEADER + start * SLOT)
                if len(raw) != length * SLOT:
                    return None
                for offset in range(0, len(raw), SLOT):
                    seq, size, key = _SLOT.unpack_from(raw, offset)
                    if seq != expected or size > 71:
                        return None  # overwritten meanwhile, or damaged
                    text = key[:size].decode("utf-8", "replace")
                    if text == ALL:
                        return None
                    keys.add(text)
                    expected += 1
        except OSError:
            return None
        return keys

    # -- locking ------------------------------------------------------------------------------

    @contextmanager
    def shared(self) -> Iterator[int | None]:
        """Hold off writers while a cache miss is read; yields the counter (None: no caching)."""
        fd = self.check()
        if fd is None:
            yield None
            return
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield self.read()
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[ChangeLog]:
        """Be the one writer: announce, then commit, inside this block."""
        fd: int | None = None
        for _ in range(3):
            candidate = self.check()
            if candidate is None:
                break
            fcntl.flock(candidate, fcntl.LOCK_EX)
            if os.fstat(candidate).st_nlink > 0:
                fd = candidate
                break
            # Replaced while we waited: the other writers lock the new file.
            fcntl.flock(candidate, fcntl.LOCK_UN)
        else:
            raise StorageError(f"Registry unavailable: {CHANGES_FILE} keeps being replaced.")
        if fd is None:
            # Nobody can cache without the file, so there is nobody to tell.
            yield self
            self.written_at = None
            return
        self._locked = fd
        try:
            yield self
            # Still under the lock: nobody else can have moved the counter since ours.
            self.written_at = self.read()
        finally:
            self._locked = None
            fcntl.flock(fd, fcntl.LOCK_UN)

    # -- writing (inside `exclusive`, before the commit) ---------------------------------------

    def changed(self, instance_ids: Sequence[str], digests: Sequence[str]) -> None:
        self._append([f"i:{i}" for i in instance_ids] + [f"c:{d}" for d in digests])

    def changed_all(self) -> None:
        self._append([ALL])

    def _append(self, keys: list[str]) -> None:
        fd = self._locked
        if fd is None:
            if self._fd is None:
                return  # no file: see `exclusive`
            raise RuntimeError("announce changes inside ChangeLog.exclusive()")
        try:
            counter = self._counter(fd)
            if counter is None:
                raise OSError(0, "the change counter is unreadable")
            for key in keys:
                data = key.encode()
                if len(data) > 71:
                    data = ALL.encode()
                counter += 1
                slot = HEADER + (counter % SLOTS) * SLOT
                os.pwrite(fd, _SLOT.pack(counter, len(data), data), slot)
            os.pwrite(fd, counter.to_bytes(8, "little"), 8)
        except OSError as exc:
            # Not announced means not committed: the caller's transaction rolls back.
            raise StorageError(
                f"Registry unavailable: {CHANGES_FILE} in the data dir cannot be written "
                f"({exc.strerror or exc}); retry.",
            ) from None
