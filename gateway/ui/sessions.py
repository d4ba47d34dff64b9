"""UI sessions: a login gives the browser a random cookie; the gateway keeps a bounded list.

The list lives in one small file in the data dir (`ui_sessions.json`, 0600), so every worker
process of one `serve` knows every session and a logout ends it everywhere. It holds only the
SHA-256 of each cookie, never the cookie. A session ends after `IDLE_TIMEOUT` without use,
`MAX_AGE` after login, on logout, when `MAX_SESSIONS` newer ones push it out, and when the
admin token changes (each session records which token opened it).

The CSRF token of a session is derived from its cookie (an HMAC), so it needs no storage and
cannot be computed by anyone who cannot read the cookie, which is HttpOnly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.files import ensure_private_file, write_private_file

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_AGE",
    "MAX_SESSIONS",
    "SESSIONS_FILE",
    "Session",
    "SessionStore",
]

SESSIONS_FILE = "ui_sessions.json"
MAX_SESSIONS = 16
IDLE_TIMEOUT = 30 * 60
MAX_AGE = 8 * 3600
# A session's last use is written at most this often (each write is a file replace).
TOUCH_EVERY = 60.0
_CSRF_CONTEXT = b"powermem-gateway ui csrf"


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser, as this request presented it."""

    cookie: str
    created: float
    seen: float

    @property
    def csrf(self) -> str:
        """The token every form of this session carries (and every action checks)."""
        return hmac.new(self.cookie.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionStore:
    """The sessions of every process on one data dir. Blocking file I/O: call off the loop."""

    def __init__(
        self,
        data_dir: Path,
        admin_token: str,
        *,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = data_dir / SESSIONS_FILE
        self._lock_path = data_dir / (SESSIONS_FILE + ".lock")
        for path in (self.path, self._lock_path):
            ensure_private_file(path, "UI sessions")
        # Which admin token opened a session; a different token ends it.
        self._token = hashlib.sha256(b"powermem-gateway ui\0" + admin_token.encode()).hexdigest()
        self.max_sessions = max(1, max_sessions)
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self._clock = clock
        self._mutex = threading.Lock()
        self._cached: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None

    # -- the file -------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        """The sessions as the file holds them (re-read only when the file changed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cached is not None and self._cached[0] == stamp:
            return self._cached[1]
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raw = {}  # unreadable: every session ends, nobody gets in without the token
        found = raw.get("sessions") if isinstance(raw, dict) else None
        sessions = {
            k: v
            for k, v in (found.items() if isinstance(found, dict) else ())
            if isinstance(v, dict) and isinstance(v.get("created"), float | int)
        }
        self._cached = (stamp, sessions)
        return sessions

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Read, change and write back the sessions under a lock every process honours."""
        with self._mutex:
            fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                sessions = dict(self._read())
                yield sessions
                now = self._clock()
                alive = {k: v for k, v in sessions.items() if self._alive(v, now)}
                newest = sorted(alive.items(), key=lambda kv: kv[1]["seen"], reverse=True)
                kept = dict(newest[: self.max_sessions])
                write_private_file(self.path, json.dumps({"sessions": kept}))
                self._cached = None
            finally:
                os.close(fd)

    def _alive(self, entry: dict[str, Any], now: float) -> bool:
        return (
            entry.get("token") == self._token
            and now - float(entry["created"]) < self.max_age
            and now - float(entry.get("seen", entry["created"])) < self.idle_timeout
        )

    # -- what the UI asks ----------------------------------------------------------------

    def open(self, remote: str | None) -> Session:
        """A new session (the oldest beyond `max_sessions` ends); its cookie is in the answer."""
        cookie = secrets.token_urlsafe(32)
        now = self._clock()
        with self._changing() as sessions:
            sessions[_digest(cookie)] = {
                "created": now,
                "seen": now,
                "token": self._token,
                "remote": (remote or "")[:64],
            }
        return Session(cookie, now, now)

    def find(self, cookie: str | None) -> Session | None:
        """The live session this cookie belongs to, or None; its last use is noted."""
        if not cookie or len(cookie) > 128:
            return None
        key = _digest(cookie)
        now = self._clock()
        with self._mutex:
            entry = self._read().get(key)
        if entry is None or not self._alive(entry, now):
            return None
        if now - float(entry.get("seen", 0)) >= TOUCH_EVERY:
            with self._changing() as sessions:
                if key in sessions:
                    sessions[key] = {**sessions[key], "seen": now}
        return Session(cookie, float(entry["created"]), now)

    def close(self, cookie: str | None) -> None:
        """Log out: the session ends in every process."""
        if cookie:
            with self._changing() as sessions:
                sessions.pop(_digest(cookie), None)

    def count(self) -> int:
        now = self._clock()
        with self._mutex:
            return sum(1 for v in self._read().values() if self._alive(v, now))
