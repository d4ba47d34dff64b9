"""The embedded store of record: the `Store` protocol on one SQLite file in the data dir.

The unique `config_digest` column makes "one configuration, one instance" a database fact, so
neither a burst of identical first requests nor several gateway processes on one data dir can
create twins; the total cap is counted inside the creating transaction for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.errors import ConfigConflict, InstanceCapReached, StorageError
from gateway.instances import sqlite_usage
from gateway.instances.sqlite_db import COLUMNS, DB_FILE, SELECT, Database
from gateway.instances.sqlite_keys import SqliteKeys
from gateway.instances.store import (
    Announcer,
    BuildNew,
    BuildReplacement,
    Row,
    UsageDelta,
)

__all__ = ["DB_FILE", "SqliteStore"]


def _cap_reached(limit: int) -> InstanceCapReached:
    return InstanceCapReached(
        f"This gateway holds its maximum of {limit} instances; no new one is registered. "
        "Delete unused instances (the admin can list them), or raise "
        "POWERMEM_GATEWAY_MAX_INSTANCES.",
        details={"limit": limit, "scope": "total"},
    )


def _after_the_last(db: Any, row: Row) -> Row:
    """`row` with a creation stamp later than every stored one (writers are serialised here).

    Pages are ordered by (created_at, instance_id): strictly increasing stamps mean a row
    created while someone pages always comes after their cursor, never before it.
    """
    (last,) = db.execute("SELECT max(created_at) FROM instances").fetchone()
    if last is None or row.created_at > last:
        return row
    later = datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    stamp = later.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return replace(row, created_at=stamp, updated_at=stamp)


def _filters(
    client: str | None, provider: str | None, exclude: Sequence[str]
) -> tuple[str, list[Any]]:
    where, args = [], []
    if client is not None:
        where.append("client = ?")
        args.append(client)
    if provider is not None:
        where.append("provider = ?")
        args.append(provider)
    if exclude:
        where.append("instance_id NOT IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(exclude)))
    return " AND ".join(where), args


class SqliteStore(SqliteKeys):
    """Blocking SQLite access; call it from one worker thread (see `Registry`)."""

    remote = False

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir)
        self.path = self.database.path

    def close(self) -> None:
        self.database.close()

    def ping(self) -> None:
        self.database.one("SELECT 1")

    # -- instances -------------------------------------------------------------------------

    def get(self, instance_id: str) -> Row | None:
        found = self.database.one(f"{SELECT} WHERE instance_id = ?", (instance_id,))
        return Row(*found) if found else None

    def by_digest(self, digest: str) -> Row | None:
        found = self.database.one(f"{SELECT} WHERE config_digest = ?", (digest,))
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
        with self.database.write() as db:
            found = db.execute(f"{SELECT} WHERE config_digest = ?", (digest,)).fetchone()
            if found:
                return Row(*found), False
            if max_total > 0:
                (count,) = db.execute("SELECT count(*) FROM instances").fetchone()
                if count >= max_total:
                    raise _cap_reached(max_total)
            for instance_id in candidates:
                if db.execute(
                    "SELECT 1 FROM instances WHERE instance_id = ?", (instance_id,)
                ).fetchone():
                    continue
                row = _after_the_last(db, build(instance_id, self._master_key_id(db)))
                announce.changed([row.instance_id], [digest])
                db.execute(
                    f"INSERT INTO instances({COLUMNS}) VALUES ({','.join('?' * 12)})",
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
                        row.source,
                        row.secret_hash,
                    ),
                )
                return row, True
        raise StorageError("Registry unavailable: no free instance id (this should not happen).")

    @staticmethod
    def _master_key_id(db: Any) -> str | None:
        found = db.execute("SELECT value FROM meta WHERE name='master_key_id'").fetchone()
        return str(found[0]) if found else None

    def replace(self, old: Row, build: BuildReplacement, *, announce: Announcer) -> Row:
        with self.database.write() as db:
            new = build(self._master_key_id(db))
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
            announce.changed([old.instance_id], [old.config_digest, new.config_digest])
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
            found = db.execute(f"{SELECT} WHERE instance_id = ?", (old.instance_id,)).fetchone()
        return Row(*found)

    def delete(self, instance_id: str, *, announce: Announcer) -> Row | None:
        with self.database.write() as db:
            found = db.execute(f"{SELECT} WHERE instance_id = ?", (instance_id,)).fetchone()
            if not found:
                return None
            row = Row(*found)
            announce.changed([instance_id], [row.config_digest])
            self._forget(db, [instance_id])
        return row

    @staticmethod
    def _forget(db: Any, ids: Sequence[str]) -> None:
        for table in ("instances", "usage", "usage_hourly"):
            db.executemany(
                f"DELETE FROM {table} WHERE instance_id = ?",
                [(i,) for i in ids],
            )

    def _set(self, instance_id: str, column: str, value: str, announce: Announcer) -> Row | None:
        with self.database.write() as db:
            found = db.execute(f"{SELECT} WHERE instance_id = ?", (instance_id,)).fetchone()
            if not found:
                return None
            announce.changed([instance_id], [found[7]])
            db.execute(
                f"UPDATE instances SET {column} = ? WHERE instance_id = ?",
                (value, instance_id),
            )
            found = db.execute(f"{SELECT} WHERE instance_id = ?", (instance_id,)).fetchone()
        return Row(*found)

    def set_secret_hash(
        self, instance_id: str, secret_hash: str, *, announce: Announcer
    ) -> Row | None:
        return self._set(instance_id, "secret_hash", secret_hash, announce)

    def set_source(self, instance_id: str, source: str, *, announce: Announcer) -> Row | None:
        return self._set(instance_id, "source", source, announce)

    def expire(
        self, *, source: str, unused_before: str, limit: int, announce: Announcer
    ) -> list[Row]:
        with self.database.write() as db:
            found = db.execute(
                f"{SELECT} WHERE source = ? AND coalesce((SELECT last_used_at FROM usage u "
                "WHERE u.instance_id = instances.instance_id), created_at) < ? LIMIT ?",
                (source, unused_before, limit),
            ).fetchall()
            rows = [Row(*f) for f in found]
            if rows:
                announce.changed([r.instance_id for r in rows], [r.config_digest for r in rows])
                self._forget(db, [r.instance_id for r in rows])
        return rows

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
            where = " AND ".join(filter(None, ["(created_at, instance_id) > (?, ?)", where]))
            args = [*after, *args]
        sql = f"{SELECT} {'WHERE ' + where if where else ''} "
        sql += "ORDER BY created_at, instance_id LIMIT ?"
        return [Row(*r) for r in self.database.all(sql, (*args, limit))]

    def total(self, *, client: str | None, provider: str | None, exclude: Sequence[str]) -> int:
        where, args = _filters(client, provider, exclude)
        sql = f"SELECT count(*) FROM instances {'WHERE ' + where if where else ''}"
        return int(self.database.one(sql, tuple(args))[0])

    # -- usage ----------------------------------------------------------------------------------

    def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None:
        with self.database.write() as db:
            sqlite_usage.add(db, deltas)

    def usage(self, instance_ids: Sequence[str], *, since_hour: int) -> dict[str, dict[str, Any]]:
        return sqlite_usage.read(self.database, instance_ids, since_hour=since_hour)
