"""The SQLite file itself: opening it privately, its versioned schema, transactions, errors.

SQLite serialises writers across processes (`BEGIN IMMEDIATE` + WAL), and WAL with
synchronous=FULL means an acknowledged registration survives `kill -9`. The schema is
migrated forward at open, one numbered step at a time inside a write transaction, so several
processes opening an old file at once migrate it exactly once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.errors import StorageError
from gateway.files import ensure_private_file

__all__ = ["COLUMNS", "DB_FILE", "SELECT", "Database", "storage_error"]

DB_FILE = "registry.sqlite3"
# Seconds a process opening the registry waits for another that is switching it to WAL.
WAL_WAIT = 10.0
# The `instances` columns in `Row` order.
COLUMNS = (
    "instance_id, client, provider, model, api_key, masked_key, base_url, config_digest, "
    "created_at, updated_at, source, secret_hash"
)
SELECT = f"SELECT {COLUMNS} FROM instances"

# Each step takes the schema from version n-1 to n; never edit a step once released.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS instances (
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
        )""",
        """CREATE TABLE IF NOT EXISTS usage (
            instance_id       TEXT PRIMARY KEY,
            requests          INTEGER NOT NULL DEFAULT 0,
            errors            INTEGER NOT NULL DEFAULT 0,
            relay_calls       INTEGER NOT NULL DEFAULT 0,
            relay_errors      INTEGER NOT NULL DEFAULT 0,
            prompt_tokens     INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            last_used_at      TEXT
        )""",
        "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # Where an instance came from (api / implicit), and its hashed secret (issue 9.5).
        "ALTER TABLE instances ADD COLUMN source TEXT NOT NULL DEFAULT 'api'",
        "ALTER TABLE instances ADD COLUMN secret_hash TEXT NOT NULL DEFAULT ''",
        # Paging in a stable order without sorting the table (issue 11.8).
        "CREATE INDEX IF NOT EXISTS instances_order ON instances(created_at, instance_id)",
        "CREATE INDEX IF NOT EXISTS instances_source ON instances(source)",
        # LLM failures reported by the relay (issue 10.4) and the 24 h chart (issue 16).
        "ALTER TABLE usage ADD COLUMN llm_errors INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE usage ADD COLUMN last_llm_error TEXT",
        """CREATE TABLE IF NOT EXISTS usage_hourly (
            instance_id TEXT NOT NULL,
            hour        INTEGER NOT NULL,           -- Unix time // 3600
            llm_calls   INTEGER NOT NULL DEFAULT 0,
            llm_errors  INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (instance_id, hour)
        ) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS usage_hourly_hour ON usage_hourly(hour)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def storage_error(exc: sqlite3.Error) -> StorageError:
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


class Database:
    """One connection to the registry file; use it from one thread at a time."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / DB_FILE
        try:
            # Create the file 0600 ourselves: SQLite gives its -wal and -shm files the mode of
            # the database file, so this one call keeps every registry file private.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            for suffix in ("", "-wal", "-shm"):
                ensure_private_file(self.path.with_name(DB_FILE + suffix), "registry")
            self.db = sqlite3.connect(
                self.path, isolation_level=None, timeout=10.0, check_same_thread=False
            )
        except OSError as exc:
            raise StorageError(
                f"Registry unavailable: cannot open {DB_FILE} in the data dir ({exc.strerror})."
            ) from None
        except sqlite3.Error as exc:
            raise storage_error(exc) from None
        try:
            self._use_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    def _use_wal(self) -> None:
        """WAL, once per file (the mode is stored in it). Switching takes an exclusive lock for
        which SQLite may answer "locked" at once instead of waiting, when several processes
        open a new registry together: wait for the one that switches, within the timeout."""
        deadline = time.monotonic() + WAL_WAIT
        while True:
            try:
                (mode,) = self.db.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        if self.one("PRAGMA user_version")[0] == SCHEMA_VERSION:
            return
        with self.write() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"The registry in the data dir was written by a newer gateway (schema "
                    f"{version}, this one knows {SCHEMA_VERSION}); upgrade this gateway."
                )
            if (
                version == 0
                and db.execute("SELECT 1 FROM sqlite_master WHERE name='instances'").fetchone()
            ):
                # Made before schema versions were recorded: that was step 1 exactly.
                version = 1
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite errors become a `StorageError` that says what to do."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk, for one);
                # a second ROLLBACK would fail and hide the error that explains the failure.
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise storage_error(exc) from None

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        try:
            return self.db.execute(sql, args).fetchone()
        except sqlite3.Error as exc:
            raise storage_error(exc) from None

    def all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc) from None
