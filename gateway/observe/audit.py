"""The audit trail: one JSON line per change to the registry, appended to `<data_dir>/audit.log`.

Logged: create, implicit_create, update (with the names of the fields that changed), delete,
rotate, admin_auth_failed, key_rejected, expire, secret_rotate, secret_revoke and
secret_reset. Each line has `ts`, `action`, `instance_id`, `client` and
`source` (the caller's address, or `cli`). Never a key: an entry holds names and ids only,
and its fields are built here from an explicit list, not from request data.

The file is created 0600 and opened with O_APPEND; every entry is one `write()` of one whole
line, so several gateway processes on one data dir append without interleaving.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = ["AUDIT_FILE", "Action", "AuditLog"]

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
]


class AuditLog:
    """`forward`, when given, is handed each entry too (a shared registry keeps them all)."""

    def __init__(
        self, data_dir: Path, *, forward: Callable[[dict[str, object]], None] | None = None
    ) -> None:
        self.path = data_dir / AUDIT_FILE
        self._forward = forward
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.fchmod(self._fd, 0o600)
        self._lock = threading.Lock()

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
        if self._forward is not None:
            self._forward(entry)
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                return
            try:
                os.write(self._fd, line)
            except OSError:
                # The change itself is committed; a full disk must not turn it into an error.
                log.exception("could not append to %s", self.path)
