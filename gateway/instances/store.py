"""The store of record: one SQLite file, written by one thread per process.

SQLite serialises writers across processes (`BEGIN IMMEDIATE` + WAL), and the unique
`config_digest` column makes "one configuration, one instance" a database fact, so neither a
burst of identical first requests nor two gateway processes on one data dir can create twins.
WAL with synchronous=FULL means an acknowledged registration survives `kill -9`.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigConflict, StorageError

__all__ = ["Row", "Store", "UsageDelta", "now_iso"]

DB_FILE = "registry.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id   TEXT PRIMARY KEY,
    client        TEXT NOT NULL DEFAULT '',
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    api_key       TEXT NOT NULL,            -- ciphertext, see gateway.instances.crypto
    masked_key    TEXT NOT NULL,
    base_url      TEXT NOT NULL DEFAULT '',
    config_digest TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    instance_id       TEXT PRIMARY KEY,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    relay_calls       INTEGER NOT NULL DEFAULT 0,
    relay_errors      INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    last_used_at      TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_COLUMNS = (
    "instance_id, client, provider, model, api_key, masked_key, base_url, config_digest, "
    "created_at, updated_at"
)


def _master_key_id(db: sqlite3.Connection) -> str | None:
    found = db.execute("SELECT value FROM meta WHERE name='master_key_id'").fetchone()
    return str(found[0]) if found else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Row:
    instance_id: str
    client: str
    provider: str
    model: str
    api_key: str  # ciphertext
    masked_key: str
    base_url: str
    config_digest: str
    created_at: str
    updated_at: str


@dataclass
class UsageDelta:
    requests: int = 0
    errors: int = 0
    relay_calls: int = 0
    relay_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_used_at: str | None = None


def _storage_error(exc: sqlite3.Error) -> StorageError:
    text = str(exc).lower()
    if "full" in text:
        hint = "the disk holding the data dir is full; free some space and retry."
    elif "readonly" in text or "read-only" in text:
        hint = "the data dir is read-only; make it writable by the gateway's user."
    elif "locked" in text or "busy" in text:
        hint = "the registry is busy (another gateway process is writing); retry."
    else:
        hint = "the registry could not be written; check the data dir and retry."
    return StorageError(f"Registry unavailable: {hint}", details={"reason": text[:200]})


class Store:
    """Blocking SQLite access; call it from one worker thread (see `Registry`)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DB_FILE
        try:
            # Create the file 0600 ourselves: SQLite gives its -wal and -shm files the mode of
            # the database file, so this one call keeps every registry file private.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(self.path, 0o600)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except OSError as exc:
            raise StorageError(
                f"Registry unavailable: cannot open {DB_FILE} in the data dir ({exc.strerror})."
            ) from None
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, for one);
                # a second ROLLBACK would fail and hide the error that explains the failure.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise _storage_error(exc) from None

    def _one(self, sql: str, args: tuple[Any, ...]) -> Row | None:
        try:
            found = self._db.execute(f"SELECT {_COLUMNS} FROM instances {sql}", args).fetchone()
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None
        return Row(*found) if found else None

    def id_key(self) -> bytes:
        """The HMAC key ids are derived with: made once, shared by every process, never rotated."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('id_key', ?)",
                (secrets.token_hex(32),),
            )
            (value,) = db.execute("SELECT value FROM meta WHERE name='id_key'").fetchone()
        return bytes.fromhex(value)

    def master_key_id(self) -> str | None:
        """The master key every writer encrypts under (None until a rotation names one)."""
        try:
            return _master_key_id(self._db)
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None

    def set_master_key_id(self, key_id: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO meta(name, value) VALUES ('master_key_id', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (key_id,),
            )

    def ciphertexts(self) -> list[tuple[str, str]]:
        """Every (instance_id, api_key ciphertext): what a rotation has to look at."""
        try:
            found = self._db.execute("SELECT instance_id, api_key FROM instances").fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None
        return [(str(i), str(k)) for i, k in found]

    def swap_ciphertexts(self, swaps: list[tuple[str, str, str]]) -> list[Row]:
        """Set each (instance_id, old, new) ciphertext if the row still holds `old`.

        One transaction for the batch; rows changed meanwhile are left alone (the caller
        looks again). Returns the rows that were rewritten.
        """
        done: list[Row] = []
        with self._write() as db:
            for instance_id, old, new in swaps:
                changed = db.execute(
                    "UPDATE instances SET api_key = ? WHERE instance_id = ? AND api_key = ?",
                    (new, instance_id, old),
                ).rowcount
                if changed:
                    found = db.execute(
                        f"SELECT {_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
                    ).fetchone()
                    done.append(Row(*found))
        return done

    def get(self, instance_id: str) -> Row | None:
        return self._one("WHERE instance_id = ?", (instance_id,))

    def by_digest(self, digest: str) -> Row | None:
        return self._one("WHERE config_digest = ?", (digest,))

    def all(self) -> list[Row]:
        try:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM instances ORDER BY created_at, instance_id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None
        return [Row(*r) for r in rows]

    def count(self, excluding: tuple[str, ...] = ()) -> int:
        """How many rows there are, not counting the ids in `excluding`; one SQL count."""
        marks = ",".join("?" * len(excluding))
        where = f"WHERE instance_id NOT IN ({marks})" if excluding else ""
        try:
            found = self._db.execute(f"SELECT COUNT(*) FROM instances {where}", excluding)
            return int(found.fetchone()[0])
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None

    def create(
        self,
        digest: str,
        candidates: Iterator[str],
        build: Callable[[str, str | None], Row],
    ) -> tuple[Row, bool]:
        """The row for `digest`, made from the first free candidate id if there is none yet.

        `build(instance_id, master_key_id)` runs inside the write transaction, with the
        master key id the database names as current (see `gateway.instances.keystore`).
        """
        with self._write() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE config_digest = ?", (digest,)
            ).fetchone()
            if found:
                return Row(*found), False
            for instance_id in candidates:
                taken = db.execute(
                    "SELECT 1 FROM instances WHERE instance_id = ?", (instance_id,)
                ).fetchone()
                if not taken:
                    row = build(instance_id, _master_key_id(db))
                    db.execute(
                        f"INSERT INTO instances({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (
                            row.instance_id,
                            row.client,
                            row.provider,
                            row.model,
                            row.api_key,
                            row.masked_key,
                            row.base_url,
                            row.config_digest,
                            row.created_at,
                            row.updated_at,
                        ),
                    )
                    return row, True
        raise StorageError("Registry unavailable: no free instance id (this should not happen).")

    def replace(self, old: Row, build: Callable[[str | None], Row]) -> Row:
        """Write `build(master_key_id)` over `old` (same id) unless its configuration belongs
        to another id or `old` changed meanwhile."""
        with self._write() as db:
            new = build(_master_key_id(db))
            clash = db.execute(
                "SELECT instance_id FROM instances WHERE config_digest = ? AND instance_id != ?",
                (new.config_digest, new.instance_id),
            ).fetchone()
            if clash:
                raise ConfigConflict(
                    f"That configuration is already registered as {clash[0]}; "
                    "use that instance or delete it first.",
                    details={"instance_id": clash[0]},
                )
            changed = db.execute(
                "UPDATE instances SET client=?, provider=?, model=?, api_key=?, masked_key=?, "
                "base_url=?, config_digest=?, updated_at=? WHERE instance_id=? AND updated_at=?",
                (
                    new.client,
                    new.provider,
                    new.model,
                    new.api_key,
                    new.masked_key,
                    new.base_url,
                    new.config_digest,
                    new.updated_at,
                    old.instance_id,
                    old.updated_at,
                ),
            ).rowcount
            if not changed:
                raise ConfigConflict(
                    "The instance changed while this update was being made; read it and retry.",
                    details={"instance_id": old.instance_id},
                )
        return new

    def delete(self, instance_id: str) -> Row | None:
        with self._write() as db:
            found = db.execute(
                f"SELECT {_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,)
            ).fetchone()
            db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
            db.execute("DELETE FROM usage WHERE instance_id = ?", (instance_id,))
        return Row(*found) if found else None

    def add_usage(self, deltas: dict[str, UsageDelta]) -> None:
        with self._write() as db:
            for instance_id, d in deltas.items():
                db.execute(
                    "INSERT INTO usage(instance_id) VALUES (?) ON CONFLICT DO NOTHING",
                    (instance_id,),
                )
                db.execute(
                    "UPDATE usage SET requests=requests+?, errors=errors+?, "
                    "relay_calls=relay_calls+?, relay_errors=relay_errors+?, "
                    "prompt_tokens=prompt_tokens+?, completion_tokens=completion_tokens+?, "
                    "last_used_at=max(coalesce(last_used_at, ''), coalesce(?, '')) "
                    "WHERE instance_id=?",
                    (
                        d.requests,
                        d.errors,
                        d.relay_calls,
                        d.relay_errors,
                        d.prompt_tokens,
                        d.completion_tokens,
                        d.last_used_at,
                        instance_id,
                    ),
                )

    def usage(self, instance_id: str) -> dict[str, Any]:
        try:
            found = self._db.execute(
                "SELECT requests, errors, relay_calls, relay_errors, prompt_tokens, "
                "completion_tokens, last_used_at FROM usage WHERE instance_id = ?",
                (instance_id,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise _storage_error(exc) from None
        names = (
            "requests",
            "errors",
            "relay_calls",
            "relay_errors",
            "prompt_tokens",
            "completion_tokens",
            "last_used_at",
        )
        if not found:
            return dict.fromkeys(names[:-1], 0) | {"last_used_at": None}
        usage = dict(zip(names, found, strict=True))
        usage["last_used_at"] = usage["last_used_at"] or None
        return usage
