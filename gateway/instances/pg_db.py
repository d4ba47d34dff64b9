"""The PostgreSQL registry's connection: opening it, its versioned schema, transactions, errors.

Everything lives in one schema of its own (`powermem_gateway`), so the registry can share a
database with powermem's own tables. The schema is migrated forward at open, one numbered
step at a time, under a transaction-scoped advisory lock: replicas starting together migrate
it exactly once, and a step is never applied twice (its number is recorded in the same
transaction). The driver is psycopg 3, used blocking from the registry's one worker thread,
like SQLite.

A lost connection (the server restarted, a network blip) is replaced on the next call; a call
that failed before anything was committed is tried once more on the new connection, so a
replica recovers by itself. What cannot be done becomes a `StorageError` (503) with
`Retry-After`, never a stale answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from gateway.errors import StorageError

__all__ = [
    "CHANGES_CHANNEL",
    "COLUMNS",
    "RETRY_AFTER",
    "SCHEMA",
    "SELECT",
    "PgDatabase",
    "Undo",
    "connect",
    "describe_url",
    "storage_error",
]

log = logging.getLogger("gateway.registry")

T = TypeVar("T")
SCHEMA = "powermem_gateway"
CHANGES_CHANNEL = "powermem_gateway_changes"
RETRY_AFTER = "2"
CONNECT_TIMEOUT = 5
FAIL_FAST = 1.0  # seconds calls fail at once after a failed connect
COLUMNS = (
    "instance_id, client, provider, model, api_key, masked_key, base_url, config_digest, "
    "created_at, updated_at, source, secret_hash"
)
SELECT = f"SELECT {COLUMNS} FROM instances"
# Any constant: the lock that serialises migrations between replicas starting together.
_MIGRATION_LOCK = 0x706D6777_00000001

# Each step takes the schema from version n-1 to n; never edit a step once released.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE instances (
            instance_id   TEXT PRIMARY KEY,
            client        TEXT NOT NULL DEFAULT '',
            provider      TEXT NOT NULL,
            model         TEXT NOT NULL,
            api_key       TEXT NOT NULL,            -- ciphertext, see gateway.instances.crypto
            masked_key    TEXT NOT NULL,
            base_url      TEXT NOT NULL DEFAULT '',
            config_digest TEXT NOT NULL UNIQUE,
            created_at    TEXT NOT NULL,            -- ISO-8601 UTC, ms: orders like a string
            updated_at    TEXT NOT NULL,
            source        TEXT NOT NULL DEFAULT 'api',
            secret_hash   TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX instances_order ON instances(created_at, instance_id)",
        "CREATE INDEX instances_source ON instances(source)",
        """CREATE TABLE usage (
            instance_id       TEXT PRIMARY KEY,
            requests          BIGINT NOT NULL DEFAULT 0,
            errors            BIGINT NOT NULL DEFAULT 0,
            relay_calls       BIGINT NOT NULL DEFAULT 0,
            relay_errors      BIGINT NOT NULL DEFAULT 0,
            prompt_tokens     BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            llm_errors        BIGINT NOT NULL DEFAULT 0,
            last_used_at      TEXT,
            last_llm_error    JSONB
        )""",
        """CREATE TABLE usage_hourly (
            instance_id TEXT NOT NULL,
            hour        BIGINT NOT NULL,            -- Unix time // 3600
            llm_calls   BIGINT NOT NULL DEFAULT 0,
            llm_errors  BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (instance_id, hour)
        )""",
        "CREATE INDEX usage_hourly_hour ON usage_hourly(hour)",
        # id_key, master_key_id: facts every replica shares.
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # The change counter: every announcing write takes this one row's lock, so writers
        # are serialised cluster-wide and the sequence numbers follow commit order. It starts
        # at a random point, like the change file (gateway.instances.changes).
        """CREATE TABLE change_counter (
            id  INTEGER PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            seq BIGINT NOT NULL
        )""",
        "INSERT INTO change_counter(id, seq) VALUES (1, (random() * 2^52)::bigint + 2^32)",
        # What each change named, for a replica catching up on notifications it missed.
        "CREATE TABLE changes (seq BIGINT PRIMARY KEY, keys TEXT[] NOT NULL)",
        # Processes that cache records, with their lease (gateway.instances.pg_feed).
        """CREATE UNLOGGED TABLE caches (
            holder        TEXT PRIMARY KEY,
            backend_pid   INTEGER NOT NULL,
            heartbeat_at  TIMESTAMPTZ NOT NULL
        )""",
        # The audit trail of every replica (the data dir's audit.log stays a local copy).
        """CREATE TABLE audit (
            id          BIGSERIAL PRIMARY KEY,
            ts          TEXT NOT NULL,
            action      TEXT NOT NULL,
            instance_id TEXT,
            entry       JSONB NOT NULL
        )""",
        "CREATE INDEX audit_ts ON audit(ts)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


def describe_url(url: str) -> str:
    """Host, port and database of a URL, for messages (never the password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "the PostgreSQL registry"
    host = str(info.get("host") or "localhost")
    port = f":{info['port']}" if info.get("port") else ""
    return f"PostgreSQL at {host}{port}/{info.get('dbname') or ''}"


def storage_error(exc: psycopg.Error, where: str) -> StorageError:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        hint = f"cannot reach {where} ({reason}); retry shortly."
    else:
        hint = f"{where} refused the operation ({reason}); retry, or check the server's log."
    return StorageError(
        f"Registry unavailable: {hint}",
        details={"reason": reason},
        headers={"Retry-After": RETRY_AFTER},
    )


def connect(url: str, *, application: str) -> psycopg.Connection[Any]:
    """A connection in autocommit mode with our schema first on its search path."""
    conn = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        application_name=application,
        # A server that stops answering (a partition, not a restart) must still fail the call.
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
        tcp_user_timeout=10_000,
    )
    try:
        conn.execute(f"SET search_path TO {SCHEMA}, public")
    except BaseException:
        conn.close()
        raise
    return conn


class Undo(Exception):
    """Raised inside `transact` to roll back and return `value`."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


class PgDatabase:
    """One connection to the registry, used by one thread at a time."""

    def __init__(self, url: str, *, application: str = "powermem-gateway") -> None:
        self.url = url
        self.where = describe_url(url)
        self._application = application
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        # After a failed connect, calls fail at once for a moment instead of each waiting
        # out its own connect timeout on the one worker thread (a partition, not a restart).
        self._down_until = 0.0
        self._down: StorageError | None = None
        self._connection()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        down = self._down
        if down is not None and time.monotonic() < self._down_until:
            raise StorageError(down.message, details=down.details, headers=down.headers)
        try:
            self._conn = connect(self.url, application=self._application)
        except psycopg.Error as exc:
            self._down = storage_error(exc, self.where)
            self._down_until = time.monotonic() + FAIL_FAST
            raise storage_error(exc, self.where) from None
        self._down = None
        return self._conn

    def _migrate(self) -> None:
        try:
            found = self._conn_version()
        except StorageError:
            found = -1
        if found == SCHEMA_VERSION:
            return

        def step(cur: psycopg.Cursor[Any]) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = cur.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"The registry in {self.where} was written by a newer gateway (schema "
                    f"{version}, this one knows {SCHEMA_VERSION}); upgrade this gateway."
                )
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_migrations(version) VALUES (%s)", (number,))
            if version < SCHEMA_VERSION:
                log.info("registry schema in %s migrated to version %d", self.where, SCHEMA_VERSION)

        self.transact(step)

    def _conn_version(self) -> int:
        row = self.one("SELECT max(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    def transact(self, fn: Callable[[psycopg.Cursor[Any]], T]) -> T:
        """`fn(cursor)` in one transaction; tried once more on a fresh connection when the
        old one turns out dead before the work was done. Raise `Undo(value)` to roll back."""
        for attempt in (1, 2):
            conn = self._connection()
            done = False
            try:
                with conn.transaction(), conn.cursor() as cur:
                    result = fn(cur)
                    done = True
                return result
            except Undo as undo:
                return undo.value  # type: ignore[return-value]
            except psycopg.OperationalError as exc:
                # Dead before the work was done: nothing was committed, so once more is safe.
                if attempt == 1 and not done and conn.broken:
                    log.warning("registry connection lost (%s); reconnecting", self.where)
                    continue
                raise storage_error(exc, self.where) from None
            except psycopg.Error as exc:
                raise storage_error(exc, self.where) from None
        raise AssertionError("unreachable")

    def one(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        return self.transact(lambda cur: cur.execute(sql, args).fetchone())

    def all(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        return self.transact(lambda cur: cur.execute(sql, args).fetchall())
