"""Which store of record a registry opens, and how its processes learn of each other's changes.

The one place a `Store` and its `Changes` are chosen: SQLite in the data dir with the change
file beside it (one machine), or PostgreSQL at `settings.database_url` with the change feed
(several replicas, issue 13). Both pass tests/test_store_contract.py.

A shared store needs shared secrets: its master key must come from the environment or a
file given to every replica (POWERMEM_GATEWAY_SECRET / _FILE), never a key generated into one
replica's data dir that the others cannot read; and a replica whose key is not the one the
registry records refuses to start, in one line, rather than write what others cannot read.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import MasterKeyMismatch, StorageError
from gateway.instances.changes import ChangeLog
from gateway.instances.keystore import KeyStore
from gateway.instances.sqlite_store import SqliteStore
from gateway.instances.store import Changes, Store
from gateway.settings import Settings

__all__ = ["check_master_key", "describe", "open_changes", "open_store"]


def open_store(settings: Settings, data_dir: Path) -> Store:
    """The store of record for these settings (blocking; raises `StorageError`)."""
    if settings.database_url:
        if not settings.secret:
            raise StorageError(
                "With --database-url every replica must share one master key: set "
                "POWERMEM_GATEWAY_SECRET (or POWERMEM_GATEWAY_SECRET_FILE) to the same value "
                "on every replica; a key generated into one data dir would be unreadable by "
                "the others."
            )
        from gateway.instances.pg_store import PgStore  # psycopg only when asked for

        return PgStore(settings.database_url)
    return SqliteStore(data_dir)


def open_changes(settings: Settings, data_dir: Path, store: Store) -> Changes:
    """How this process hears of other processes' changes to `store` (and tells its own)."""
    from gateway.instances.pg_store import PgStore

    if isinstance(store, PgStore):
        from gateway.instances.pg_feed import ChangeFeed

        return ChangeFeed(store, cache=settings.registry_cache)
    return ChangeLog(data_dir)


def check_master_key(store: Store, keys: KeyStore) -> None:
    """On a shared store: record our master key if none is, else refuse one we do not hold."""
    if not store.remote:
        return
    recorded = store.claim_master_key_id(keys.current.key_id)
    if recorded not in keys.ring:
        where = getattr(store, "where", "the registry")
        raise MasterKeyMismatch(
            f"This gateway's master key ({keys.current.key_id}, from POWERMEM_GATEWAY_SECRET) "
            f"is not the one {where} records ({recorded}): start every replica with the same "
            "POWERMEM_GATEWAY_SECRET (during a rotation, the new one plus the old one in "
            "POWERMEM_GATEWAY_PREVIOUS_SECRET).",
            details={"key_id": keys.current.key_id, "recorded_key_id": recorded},
        )


def describe(store: Store) -> str:
    """`sqlite` or `postgresql`, for status and readiness."""
    return "postgresql" if store.remote else "sqlite"
