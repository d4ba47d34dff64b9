"""The audit trail: one JSON line per change to the registry, appended to `<data_dir>/audit.log`.

Logged: create, implicit_create, update (with the names of the fields that changed), delete,
rotate, admin_auth_failed, key_rejected, expire, secret_rotate, secret_revoke and
secret_reset. Each line has `ts`, `action`, `instance_id`, `client` and
`source` (the caller's address, or `cli`). Never a key: an entry holds names and ids only,
and its fields are built here from an explicit list, not from request data.

The file is created 0600 and opened with O_APPEND; every entry is one `write()` of one whole
line, so several gateway processes on one data dir append without interleaving.

Rotated by size (issue 12.6): past `MAX_BYTES` the file becomes `audit.log.1` (`.1` → `.2` …,
`KEEP` of them); the new file starts with an `audit_rotated` entry, and when the oldest file
has to go, that entry (and a warning in the gateway's log) says how many entries went with
it: nothing is ever lost silently. One process rotates at a time (a lock file); the others
notice the new file before their next write. Existing audit files with a loose mode are made
0600 at start; one owned by another user is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from gateway.files import ensure_private_file

__all__ = ["AUDIT_FILE", "KEEP", "MAX_BYTES", "Action", "AuditLog"]

log = logging.getLogger("gateway.observe.audit")

AUDIT_FILE = "audit.log"
Action = Literal[
    "create",
    "implicit_create",
    "update",
    "delete",
    "rotate",
    "admin_auth_failed",
    # The registry's (issues 9 and 12): a row refused by its integrity check, an idle implicit
    # instance expired, an instance secret rotated or revoked, stored keys dropped.
    "key_rejected",
    "expire",
    "secret_rotate",
    "secret_revoke",
    "secret_reset",
    # The relay's: a call no request forwarded by the gateway explains (issue 9.4).
    "relay_refused",
    # This file's own: a rotation, and how many old entries left with the oldest file.
    "audit_rotated",
]
MAX_BYTES = 10 * 1024 * 1024
KEEP = 5


class AuditLog:
    def __init__(self, data_dir: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = data_dir / AUDIT_FILE
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        for path in (self.path, *self._backups(), self._lock_path):
            ensure_private_file(path, "audit trail")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode = 0
        self._open()

    @property
    def _lock_path(self) -> Path:
        return self.path.with_name(AUDIT_FILE + ".lock")

    def _backups(self) -> list[Path]:
        return [self.path.with_name(f"{AUDIT_FILE}.{n}") for n in range(1, self.keep + 1)]

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(self._fd, 0o600)
        self._inode = os.fstat(self._fd).st_ino

    def _follow(self) -> None:
        """Another process rotated: write to the new file, not into the renamed one."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = -1
        if current != self._inode:
            self._open()

    def _rotate(self) -> None:
        """Shift the files (under a lock shared by every process on the data dir)."""
        lock = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            info = os.stat(self.path)
            if info.st_ino != self._inode or info.st_size < self.max_bytes:
                self._open()  # someone else rotated meanwhile
                return
            backups = self._backups()
            dropped = _count_lines(backups[-1]) if backups[-1].exists() else 0
            chain = [self.path, *backups]  # newest first; the last one's entries go
            for n in range(len(chain) - 1, 0, -1):
                if chain[n - 1].exists():
                    os.replace(chain[n - 1], chain[n])
            self._open()
        finally:
            os.close(lock)
        note: dict[str, object] = {"previous": backups[0].name, "dropped_entries": dropped}
        if dropped:
            log.warning(
                "audit log: the oldest %d entries were removed with %s (keeping %d files of "
                "%d bytes); archive audit.log.* elsewhere to keep everything",
                dropped,
                backups[-1].name,
                self.keep,
                self.max_bytes,
            )
        self._append(self._line("audit_rotated", None, "", "", None, note))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def record(
        self,
        action: Action,
        *,
        instance_id: str | None = None,
        client: str = "",
        source: str = "",
        fields: list[str] | None = None,
        key_ids: dict[str, object] | None = None,
    ) -> None:
        """Append one entry. `fields` are field *names*; `key_ids` are master-key fingerprints."""
        line = self._line(action, instance_id, client, source, fields, key_ids)
        with self._lock:
            if self._fd is None:
                return
            try:
                self._follow()
                size = self._append(line)
                if size >= self.max_bytes:
                    self._rotate()
            except OSError:
                # The change itself is committed; a full disk must not turn it into an error.
                log.exception("could not append to %s", self.path)

    def _append(self, line: bytes) -> int:
        assert self._fd is not None
        os.write(self._fd, line)
        return os.fstat(self._fd).st_size

    @staticmethod
    def _line(
        action: Action,
        instance_id: str | None,
        client: str,
        source: str,
        fields: list[str] | None,
        key_ids: dict[str, object] | None,
    ) -> bytes:
        entry: dict[str, object] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "action": action,
            "instance_id": instance_id,
            "client": client,
            "source": source,
        }
        if fields is not None:
            entry["fields"] = sorted(fields)
        if key_ids is not None:
            entry.update(key_ids)
        return (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
    return count
