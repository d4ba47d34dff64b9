"""The stored-keys half of `PgStore`: the id key, the writing master key, ciphertexts, audit.

What key rotation (gateway.instances.rotation), the v1 upgrade and `secret reset` work on,
kept apart from the instance rows' lifecycle in gateway.instances.pg_store. The master key id
recorded here is the cluster's key-rotation state: which key every replica writes with, and
which key a starting replica must hold (gateway.instances.backends).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import psycopg

from gateway.errors import StorageError
from gateway.instances.pg_db import CHANGES_CHANNEL, COLUMNS, PgDatabase, Undo
from gateway.instances.store import Announcer, Ciphertext, Row

__all__ = ["KEEP_CHANGES", "MAX_PAYLOAD", "PgKeys", "announce_keys", "lock"]

Cursor = psycopg.Cursor[Any]
# NOTIFY payloads must stay under 8000 bytes; a longer list is read from `changes` instead.
MAX_PAYLOAD = 7000
# Changes kept for replicas catching up; one further behind drops its whole cache.
KEEP_CHANGES = 20_000


def lock(cur: Cursor) -> int:
    """Take the change counter's row lock for this transaction; the sequence number it gets."""
    row = cur.execute(
        "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq"
    ).fetchone()
    if row is None:
        raise StorageError("Registry unavailable: its change counter is missing; restore it.")
    return int(row[0])


def announce_keys(cur: Cursor, seq: int, keys: list[str]) -> None:
    """Record and notify the keys changed under `seq` (inside the writing transaction)."""
    cur.execute("INSERT INTO changes(seq, keys) VALUES (%s, %s)", (seq, keys))
    payload = " ".join([str(seq), *keys])
    if len(payload.encode()) > MAX_PAYLOAD:
        payload = str(seq)  # listeners read the keys from `changes`
    cur.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, payload))
    if seq % 1000 == 0:
        cur.execute("DELETE FROM changes WHERE seq <= %s", (seq - KEEP_CHANGES,))


def _keys(instance_ids: Sequence[str], digests: Sequence[str]) -> list[str]:
    return [f"i:{i}" for i in instance_ids] + [f"c:{d}" for d in digests]


class PgKeys:
    database: PgDatabase
    committed_seq: int | None

    def _write(
        self,
        cur: Cursor,
        seq: int,
        ids: Sequence[str],
        digests: Sequence[str],
        announcer: Announcer,
    ) -> None:
        announce_keys(cur, seq, _keys(ids, digests))
        announcer.changed(ids, digests)

    def _transact(self, fn: Any) -> Any:
        seq: list[int] = []

        def body(cur: Cursor) -> Any:
            return fn(cur, seq)

        result = self.database.transact(body)
        if seq:
            self.committed_seq = seq[0]
        return result

    # -- facts shared by every replica ---------------------------------------------------

    def id_key(self) -> bytes:
        def tx(cur: Cursor) -> str:
            cur.execute(
                "INSERT INTO meta(name, value) VALUES ('id_key', %s) ON CONFLICT DO NOTHING",
                (secrets.token_hex(32),),
            )
            row = cur.execute("SELECT value FROM meta WHERE name = 'id_key'").fetchone()
            return str(row[0]) if row else ""

        return bytes.fromhex(self.database.transact(tx))

    def master_key_id(self) -> str | None:
        found = self.database.one("SELECT value FROM meta WHERE name = 'master_key_id'")
        return str(found[0]) if found else None

    def set_master_key_id(self, key_id: str) -> None:
        self.database.one(
            "INSERT INTO meta(name, value) VALUES ('master_key_id', %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value RETURNING value",
            (key_id,),
        )

    def claim_master_key_id(self, key_id: str) -> str:
        def tx(cur: Cursor) -> str:
            cur.execute(
                "INSERT INTO meta(name, value) VALUES ('master_key_id', %s) ON CONFLICT DO NOTHING",
                (key_id,),
            )
            row = cur.execute("SELECT value FROM meta WHERE name = 'master_key_id'").fetchone()
            return str(row[0]) if row else key_id

        result: str = self.database.transact(tx)
        return result

    # -- stored keys ----------------------------------------------------------------------------

    def ciphertexts(self) -> list[Ciphertext]:
        found = self.database.all("SELECT instance_id, api_key, provider, base_url FROM instances")
        return [Ciphertext(*f) for f in found]

    def key_prefixes(self) -> dict[str, int]:
        found = self.database.all(
            "SELECT substr(api_key, 1, strpos(substr(api_key, 4), '.') + 3), count(*) "
            "FROM instances WHERE api_key <> '' GROUP BY 1"
        )
        return {str(prefix): int(count) for prefix, count in found}

    def swap_ciphertexts(
        self, swaps: Sequence[tuple[str, str, str]], *, announce: Announcer
    ) -> list[Row]:
        def tx(cur: Cursor, seq: list[int]) -> list[Row]:
            number = lock(cur)
            self._write(cur, number, [instance_id for instance_id, _, _ in swaps], [], announce)
            done = []
            for instance_id, old, new in swaps:
                found = cur.execute(
                    f"UPDATE instances SET api_key = %s WHERE instance_id = %s AND api_key = %s "
                    f"RETURNING {COLUMNS}",
                    (new, instance_id, old),
                ).fetchone()
                if found:
                    done.append(Row(*found))
            seq.append(number)
            return done

        result: list[Row] = self._transact(tx)
        return result

    def drop_ciphertexts(self, *, announce: Announcer) -> int:
        def tx(cur: Cursor, seq: list[int]) -> int:
            number = lock(cur)
            announce_keys(cur, number, ["*"])
            announce.changed_all()
            dropped = cur.execute("UPDATE instances SET api_key = '' WHERE api_key <> ''").rowcount
            if not dropped:
                raise Undo(0)
            seq.append(number)
            return int(dropped)

        result: int = self._transact(tx)
        return result

    # -- the audit trail ------------------------------------------------------------------------

    def add_audit(self, entries: Sequence[dict[str, object]]) -> None:
        if not entries:
            return
        rows = [
            (str(e.get("ts", "")), str(e.get("action", "")), e.get("instance_id"), json.dumps(e))
            for e in entries
        ]

        def tx(cur: Cursor) -> None:
            cur.executemany(
                "INSERT INTO audit(ts, action, instance_id, entry) VALUES (%s, %s, %s, %s)", rows
            )

        self.database.transact(tx)
