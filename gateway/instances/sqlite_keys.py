"""The stored-keys half of `SqliteStore`: the id key, the writing master key, ciphertexts.

What key rotation (gateway.instances.rotation), the v1 upgrade (gateway.instances.upgrade)
and `secret reset` (gateway.instances.reset) work on, kept apart from the instance rows'
lifecycle in gateway.instances.sqlite_store.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from gateway.instances.sqlite_db import SELECT, Database
from gateway.instances.store import Announcer, Ciphertext, Row

__all__ = ["SqliteKeys"]


class SqliteKeys:
    database: Database

    # -- facts shared by every process ---------------------------------------------------

    def id_key(self) -> bytes:
        with self.database.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('id_key', ?)",
                (secrets.token_hex(32),),
            )
            (value,) = db.execute("SELECT value FROM meta WHERE name='id_key'").fetchone()
        return bytes.fromhex(value)

    def master_key_id(self) -> str | None:
        found = self.database.one("SELECT value FROM meta WHERE name='master_key_id'")
        return str(found[0]) if found else None

    def set_master_key_id(self, key_id: str) -> None:
        with self.database.write() as db:
            db.execute(
                "INSERT INTO meta(name, value) VALUES ('master_key_id', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (key_id,),
            )

    def claim_master_key_id(self, key_id: str) -> str:
        with self.database.write() as db:
            db.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('master_key_id', ?)", (key_id,)
            )
            (value,) = db.execute("SELECT value FROM meta WHERE name='master_key_id'").fetchone()
        return str(value)

    # -- stored keys ----------------------------------------------------------------------------

    def ciphertexts(self) -> list[Ciphertext]:
        found = self.database.all("SELECT instance_id, api_key, provider, base_url FROM instances")
        return [Ciphertext(*f) for f in found]

    def key_prefixes(self) -> dict[str, int]:
        found = self.database.all(
            "SELECT substr(api_key, 1, instr(substr(api_key, 4), '.') + 3), count(*) "
            "FROM instances WHERE api_key != '' GROUP BY 1"
        )
        return {str(prefix): int(count) for prefix, count in found}

    def swap_ciphertexts(
        self, swaps: Sequence[tuple[str, str, str]], *, announce: Announcer
    ) -> list[Row]:
        done: list[Row] = []
        with self.database.write() as db:
            announce.changed([instance_id for instance_id, _, _ in swaps], [])
            for instance_id, old, new in swaps:
                changed = db.execute(
                    "UPDATE instances SET api_key = ? WHERE instance_id = ? AND api_key = ?",
                    (new, instance_id, old),
                ).rowcount
                if changed:
                    found = db.execute(f"{SELECT} WHERE instance_id = ?", (instance_id,)).fetchone()
                    done.append(Row(*found))
        return done

    def add_audit(self, entries: Sequence[dict[str, object]]) -> None:
        """The data dir's audit.log is the whole trail of a one-machine gateway."""

    def drop_ciphertexts(self, *, announce: Announcer) -> int:
        with self.database.write() as db:
            announce.changed_all()
            return int(db.execute("UPDATE instances SET api_key = '' WHERE api_key != ''").rowcount)
