"""The store of record on PostgreSQL: the `Store` protocol for several gateway replicas.

The same facts as SQLite hold across hosts. The unique `config_digest` column makes "one
configuration, one instance" a database fact, and creation is an `INSERT … ON CONFLICT DO
NOTHING`, so identical registrations on N replicas at once give one row. Every write that
changes what an instance is takes the one row of `change_counter` first (serialising writers
cluster-wide, as `BEGIN IMMEDIATE` does for SQLite), records which keys it changes under the
next sequence number, and sends a `NOTIFY` — all inside its transaction, so the notice is
delivered exactly when the change commits, and never for a change rolled back. The
`Announcer` it is given is called there too (the contract's "before it commits").

`committed_seq` tells the caller which sequence number its last write committed under; the
change feed (gateway.instances.pg_feed) waits until every caching replica has confirmed it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import psycopg

from gateway.errors import ConfigConflict, InstanceCapReached, StorageError
from gateway.instances import pg_usage
from gateway.instances.pg_db import COLUMNS, SELECT, PgDatabase, Undo
from gateway.instances.pg_keys import PgKeys, lock
from gateway.instances.store import Announcer, BuildNew, BuildReplacement, Row, UsageDelta

__all__ = ["PgStore"]

Cursor = psycopg.Cursor[Any]


def _cap_reached(limit: int) -> InstanceCapReached:
    return InstanceCapReached(
        f"This gateway holds its maximum of {limit} instances; no new one is registered. "
        "Delete unused instances (the admin can list them), or raise "
        "POWERMEM_GATEWAY_MAX_INSTANCES.",
        details={"limit": limit, "scope": "total"},
    )


def _after_the_last(cur: Cursor, row: Row) -> Row:
    """`row` with a creation stamp later than every stored one (writers hold the lock)."""
    found = cur.execute("SELECT max(created_at) FROM instances").fetchone()
    last = found[0] if found else None
    if last is None or row.created_at > last:
        return row
    later = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    stamp = later.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return replace(row, created_at=stamp, updated_at=stamp)


def _filters(
    client: str | None, provider: str | None, exclude: Sequence[str]
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if client is not None:
        where.append("client = %s")
        args.append(client)
    if provider is not None:
        where.append("provider = %s")
        args.append(provider)
    if exclude:
        where.append("instance_id <> ALL(%s)")
        args.append(list(exclude))
    return where, args


def _values(row: Row) -> tuple[str, ...]:
    return (
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
        row.source,
        row.secret_hash,
    )


class PgStore(PgKeys):
    """Blocking PostgreSQL access; call it from one worker thread (see `Registry`)."""

    remote = True

    def __init__(self, url: str) -> None:
        self.database = PgDatabase(url)
        self.where = self.database.where
        self.url = url
        # The sequence number of the last announcing write that committed (None: none yet).
        self.committed_seq: int | None = None

    def close(self) -> None:
        self.database.close()

    def ping(self) -> None:
        self.database.one("SELECT 1")

    # -- instances -------------------------------------------------------------------------

    def get(self, instance_id: str) -> Row | None:
        found = self.database.one(f"{SELECT} WHERE instance_id = %s", (instance_id,))
        return Row(*found) if found else None

    def by_digest(self, digest: str) -> Row | None:
        found = self.database.one(f"{SELECT} WHERE config_digest = %s", (digest,))
        return Row(*found) if found else None

    def create(
        self,
        digest: str,
        candidates: Iterator[str],
        build: BuildNew,
        *,
        announce: Announcer,
        max_total: int = 0,
    ) -> tuple[Row, bool]:
        if (existing := self.by_digest(digest)) is not None:
            return existing, False
        ids = list(candidates)

        def tx(cur: Cursor, seq: list[int]) -> tuple[Row, bool]:
            number = lock(cur)
            # Another replica may have committed it while we waited for the lock.
            found = cur.execute(f"{SELECT} WHERE config_digest = %s", (digest,)).fetchone()
            if found:
                raise Undo((Row(*found), False))
            if max_total > 0:
                count = cur.execute("SELECT count(*) FROM instances").fetchone()
                if count is not None and count[0] >= max_total:
                    raise _cap_reached(max_total)
            taken = cur.execute(
                "SELECT instance_id FROM instances WHERE instance_id = ANY(%s)", (ids,)
            ).fetchall()
            free = [i for i in ids if i not in {t[0] for t in taken}]
            if not free:
                raise StorageError(
                    "Registry unavailable: no free instance id (this should not happen)."
                )
            row = _after_the_last(cur, build(free[0], self._master_key_id(cur)))
            self._write(cur, number, [row.instance_id], [digest], announce)
            # Writers hold the lock, so nothing can conflict here; if anything ever did, the
            # whole transaction (notice included) rolls back rather than lose a registration.
            inserted = cur.execute(
                f"INSERT INTO instances({COLUMNS}) VALUES ({','.join(['%s'] * 12)}) "
                "ON CONFLICT DO NOTHING RETURNING instance_id",
                _values(row),
            ).fetchone()
            if not inserted:
                raise StorageError("Registry unavailable: a concurrent write conflicted; retry.")
            seq.append(number)
            return row, True

        result: tuple[Row, bool] = self._transact(tx)
        return result

    @staticmethod
    def _master_key_id(cur: Cursor) -> str | None:
        found = cur.execute("SELECT value FROM meta WHERE name = 'master_key_id'").fetchone()
        return str(found[0]) if found else None

    def replace(self, old: Row, build: BuildReplacement, *, announce: Announcer) -> Row:
        def tx(cur: Cursor, seq: list[int]) -> Row:
            number = lock(cur)
            new = build(self._master_key_id(cur))
            clash = cur.execute(
                "SELECT instance_id FROM instances WHERE config_digest = %s AND instance_id <> %s",
                (new.config_digest, new.instance_id),
            ).fetchone()
            if clash:
                raise ConfigConflict(
                    f"That configuration is already registered as {clash[0]}; "
                    "use that instance or delete it first.",
                    details={"instance_id": clash[0]},
                )
            self._write(
                cur, number, [old.instance_id], [old.config_digest, new.config_digest], announce
            )
            found = cur.execute(
                "UPDATE instances SET client=%s, provider=%s, model=%s, api_key=%s, "
                "masked_key=%s, base_url=%s, config_digest=%s, updated_at=%s "
                f"WHERE instance_id=%s AND updated_at=%s RETURNING {COLUMNS}",
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
            ).fetchone()
            if not found:
                raise ConfigConflict(
                    "The instance changed while this update was being made; read it and retry.",
                    details={"instance_id": old.instance_id},
                )
            seq.append(number)
            return Row(*found)

        result: Row = self._transact(tx)
        return result

    def delete(self, instance_id: str, *, announce: Announcer) -> Row | None:
        def tx(cur: Cursor, seq: list[int]) -> Row | None:
            number = lock(cur)
            found = cur.execute(
                f"DELETE FROM instances WHERE instance_id = %s RETURNING {COLUMNS}", (instance_id,)
            ).fetchone()
            if not found:
                raise Undo(None)
            row = Row(*found)
            self._write(cur, number, [instance_id], [row.config_digest], announce)
            self._forget(cur, [instance_id])
            seq.append(number)
            return row

        result: Row | None = self._transact(tx)
        return result

    @staticmethod
    def _forget(cur: Cursor, ids: Sequence[str]) -> None:
        for table in ("usage", "usage_hourly"):
            cur.execute(f"DELETE FROM {table} WHERE instance_id = ANY(%s)", (list(ids),))

    def _set(self, instance_id: str, column: str, value: str, announcer: Announcer) -> Row | None:
        def tx(cur: Cursor, seq: list[int]) -> Row | None:
            number = lock(cur)
            found = cur.execute(
                f"UPDATE instances SET {column} = %s WHERE instance_id = %s RETURNING {COLUMNS}",
                (value, instance_id),
            ).fetchone()
            if not found:
                raise Undo(None)
            row = Row(*found)
            self._write(cur, number, [instance_id], [row.config_digest], announcer)
            seq.append(number)
            return row

        result: Row | None = self._transact(tx)
        return result

    def set_secret_hash(
        self, instance_id: str, secret_hash: str, *, announce: Announcer
    ) -> Row | None:
        return self._set(instance_id, "secret_hash", secret_hash, announce)

    def set_source(self, instance_id: str, source: str, *, announce: Announcer) -> Row | None:
        return self._set(instance_id, "source", source, announce)

    def expire(
        self, *, source: str, unused_before: str, limit: int, announce: Announcer
    ) -> list[Row]:
        def tx(cur: Cursor, seq: list[int]) -> list[Row]:
            number = lock(cur)
            found = cur.execute(
                f"DELETE FROM instances WHERE instance_id IN (SELECT instance_id FROM instances "
                "WHERE source = %s AND coalesce((SELECT last_used_at FROM usage u WHERE "
                "u.instance_id = instances.instance_id), created_at) < %s LIMIT %s) "
                f"RETURNING {COLUMNS}",
                (source, unused_before, limit),
            ).fetchall()
            rows = [Row(*f) for f in found]
            if not rows:
                raise Undo([])
            self._write(
                cur,
                number,
                [r.instance_id for r in rows],
                [r.config_digest for r in rows],
                announce,
            )
            self._forget(cur, [r.instance_id for r in rows])
            seq.append(number)
            return rows

        result: list[Row] = self._transact(tx)
        return result

    # -- listing ------------------------------------------------------------------------------

    def page(
        self,
        *,
        limit: int,
        after: tuple[str, str] | None,
        client: str | None,
        provider: str | None,
        exclude: Sequence[str],
    ) -> list[Row]:
        where, args = _filters(client, provider, exclude)
        if after is not None:
            where.insert(0, "(created_at, instance_id) > (%s, %s)")
            args = [*after, *args]
        sql = f"{SELECT} {'WHERE ' + ' AND '.join(where) if where else ''} "
        sql += "ORDER BY created_at, instance_id LIMIT %s"
        return [Row(*r) for r in self.database.all(sql, [*args, limit])]

    def total(self, *, client: str | None, provider: str | None, exclude: Sequence[str]) -> int:
        where, args = _filters(client, provider, exclude)
        sql = f"SELECT count(*) FROM instances {'WHERE ' + ' AND '.join(where) if where else ''}"
        return int(self.database.one(sql, args)[0])

    # -- usage ----------------------------------------------------------------------------------

    def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None:
        self.database.transact(lambda cur: pg_usage.add(cur, deltas))

    def usage(self, instance_ids: Sequence[str], *, since_hour: int) -> dict[str, dict[str, Any]]:
        return pg_usage.read(self.database, instance_ids, since_hour=since_hour)
