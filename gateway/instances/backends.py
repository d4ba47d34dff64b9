"""Which store of record a registry opens: the one place a new `Store` is chosen.

Today that is always SQLite in the data dir. PostgreSQL (issue 13) adds its branch here, on
`settings.database_url`, and passes tests/test_store_contract.py like SQLite does.
"""

from __future__ import annotations

from pathlib import Path

from gateway.instances.sqlite_store import SqliteStore
from gateway.instances.store import Store
from gateway.settings import Settings

__all__ = ["open_store"]


def open_store(settings: Settings, data_dir: Path) -> Store:
    """The store of record for these settings (blocking; raises `StorageError`)."""
    del settings  # read by the PostgreSQL branch to come
    return SqliteStore(data_dir)
