"""Fill a gateway data dir with N registered instances, for the scale benchmark.

Registering 100 000 instances one by one (API or `Registry.resolve`) takes a minute or more
here (each registration is its own fsync'ed transaction). So the fast path takes ids,
digests and ciphertexts from the gateway's own `Registry` and batches only the INSERT into
one transaction; the gateway later started on this data dir finds the rows as if it had
registered them itself. Should the registry's internals have moved on, the slow path
(`Registry.resolve`, the public way) still works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

from gateway.instances.crypto import SealedFor
from gateway.instances.model import InstanceConfig, candidate_id, mask_key
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE, SqliteStore
from gateway.instances.store import Row, now_iso
from gateway.settings import Settings

__all__ = ["KEY_FORMAT", "MODEL", "rows_for", "seed"]

# bench.lua's "keys" mode formats the same keys, so LLM-header lookups hit these instances.
KEY_FORMAT = "sk-scale-%09d-0123456789abcdef"
MODEL = "gpt-4o-mini"
BATCH = 256


def _config(i: int) -> InstanceConfig:
    return InstanceConfig.parse(provider="openai", model=MODEL, api_key=KEY_FORMAT % i)


def _settings(data_dir: Path, instances_file: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        instances_file=instances_file,
        env_file=data_dir.parent / "powermem.env",
        upstream="http://127.0.0.1:9",
    )


def rows_for(registry: Registry, meta_key_id: str | None, count: int) -> list[Row]:
    """The rows `count` registrations would make, built with the registry's own keys."""
    stamp = now_iso()
    rows = []
    for i in range(count):
        config = _config(i)
        digest = registry.digest(config)
        instance_id = candidate_id(digest, 0)
        ciphertext = registry.keys.encrypt(
            config.api_key,
            SealedFor(instance_id, config.provider, config.base_url),
            meta_key_id=meta_key_id,
        )
        rows.append(
            Row(
                instance_id=instance_id,
                client=config.client,
                provider=config.provider,
                model=config.model,
                api_key=ciphertext,
                masked_key=mask_key(config.api_key),
                base_url=config.base_url,
                config_digest=digest,
                created_at=stamp,
                updated_at=stamp,
            )
        )
    return rows


async def _fast(settings: Settings, count: int) -> list[str]:
    registry = await Registry.open(settings)
    store = SqliteStore(settings.data_dir)
    try:
        rows = rows_for(registry, store.master_key_id(), count)
    finally:
        store.close()
        await registry.close()
    columns = [f.name for f in dataclasses.fields(Row)]
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    try:
        with db:
            db.executemany(
                f"INSERT INTO instances({', '.join(columns)}) "  # noqa: S608 - constant names
                f"VALUES ({', '.join('?' * len(columns))})",
                [dataclasses.astuple(r) for r in rows],
            )
    finally:
        db.close()
    return [r.instance_id for r in rows]


async def _slow(settings: Settings, count: int) -> list[str]:
    registry = await Registry.open(settings)
    try:
        ids: list[str] = []
        for start in range(0, count, BATCH):
            batch = range(start, min(start + BATCH, count))
            found = await asyncio.gather(*(registry.resolve(_config(i)) for i in batch))
            ids.extend(record.instance_id for record, _ in found)
        return ids
    finally:
        await registry.close()


def seed(data_dir: Path, instances_file: Path, count: int) -> list[str]:
    """Register `count` instances in `data_dir`; returns their ids."""
    settings = _settings(data_dir, instances_file)
    try:
        return asyncio.run(_fast(settings, count))
    except Exception as exc:  # the registry's internals changed: take the public way
        print(f"  (fast seeding failed: {type(exc).__name__}: {exc}; registering one by one)")
        return asyncio.run(_slow(settings, count))
