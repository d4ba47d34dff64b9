"""The registry: SQLite as the store of record, instances.yaml on top, diskcache in front.

Lookups on the request path cost one diskcache read (shared by every gateway process on the
data dir). `gateway.instances.cache` keeps that cache honest across processes: once an update
or delete has answered, no process serves the old configuration, and a reader holding a row
from before a change never writes it back. Every change is also appended to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from functools import partial
from typing import Any, TypeVar

from gateway.errors import InvalidConfig, ReadOnlyInstance, UnknownInstance
from gateway.files import ensure_private_dir
from gateway.instances.cache import GONE, RecordCache
from gateway.instances.keystore import KeyStore
from gateway.instances.model import (
    InstanceConfig,
    InstanceRecord,
    candidate_id,
    config_digest,
    mask_key,
)
from gateway.instances.rotation import RotationReport, rotate
from gateway.instances.store import Row, Store, UsageDelta, now_iso
from gateway.instances.yamlfile import InstancesFile
from gateway.observe.audit import AuditLog
from gateway.policy.baseurls import UrlPolicy
from gateway.providers import PROVIDERS
from gateway.settings import Settings

__all__ = ["Registry"]

log = logging.getLogger("gateway.registry")
T = TypeVar("T")

RECORD_TTL = 300.0
TOMBSTONE_TTL = 3600.0
_UPDATABLE = ("client", "provider", "model", "api_key", "base_url")


def _record(row: Row) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row.instance_id,
        client=row.client,
        provider=row.provider,
        model=row.model,
        base_url=row.base_url,
        encrypted_key=row.api_key,
        masked_key=row.masked_key,
        config_digest=row.config_digest,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _unknown(instance_id: str) -> UnknownInstance:
    return UnknownInstance(
        f"Instance {instance_id} is not registered (it may have been deleted); "
        "register it again or drop the X-PowerMem-Instance header.",
        details={"instance_id": instance_id},
    )


def _cached(row: Row) -> tuple[tuple[Any, ...], float]:
    return astuple(_record(row)), RECORD_TTL


class Registry:
    """Every instance the gateway knows; open with `await Registry.open(settings)`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="registry")
        data_dir = ensure_private_dir(settings.data_dir)
        self.keys = KeyStore(data_dir, settings.secret, settings.previous_secrets)
        self.url_policy = UrlPolicy.from_settings(settings)
        self._store = Store(data_dir)
        self._id_key = self._store.id_key()
        self._cache = RecordCache(data_dir / "cache")
        self.audit = AuditLog(data_dir)
        self._file = InstancesFile(
            settings.instances_file,
            seal=lambda key, instance_id: self.keys.current.encrypt(key, instance_id=instance_id),
            digest=self.digest,
        )
        self._inflight: dict[str, asyncio.Future[InstanceRecord]] = {}
        self._usage: dict[str, UsageDelta] = {}
        try:
            self._file.reload(strict=True)
        except BaseException:
            # A bad instances.yaml stops the start: leave no open database behind.
            self._store.close()
            self._cache.close()
            self.audit.close()
            self._executor.shutdown()
            raise

    @classmethod
    async def open(cls, settings: Settings) -> Registry:
        return await asyncio.get_running_loop().run_in_executor(None, cls, settings)

    async def close(self) -> None:
        await self.flush_usage()
        await self._run(self._store.close)
        self._executor.shutdown(wait=True)
        self._cache.close()
        self.audit.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def reload_instances_file(self, *, strict: bool = False) -> bool:
        """Re-read instances.yaml if it changed; a bad file keeps the previous one in force."""
        return self._file.reload(strict=strict)

    # -- lookups (the request path) -----------------------------------------------------------

    def api_key(self, record: InstanceRecord) -> str:
        """The plaintext key, for the one outbound call that needs it."""
        return self.keys.decrypt(record.encrypted_key, instance_id=record.instance_id)

    def digest(self, config: InstanceConfig) -> str:
        return config_digest(self._id_key, config)

    async def get(self, instance_id: str) -> InstanceRecord:
        if (found := self._file.records.get(instance_id)) is not None:
            return found
        cached = self._cache.get(("id", instance_id))
        if cached is None:
            epoch = self._cache.epoch()  # before the read: see RecordCache.fill
            row: Row | None = await self._run(self._store.get, instance_id)
            cached = astuple(_record(row)) if row is not None else GONE
            self._cache.fill({("id", instance_id): cached}, epoch, expire=RECORD_TTL if row else 60)
        if cached == GONE:
            raise _unknown(instance_id)
        return InstanceRecord(*cached)

    def check_base_url(self, config: InstanceConfig) -> None:
        """Refuse a configuration whose (default) base URL the base-URL policy forbids."""
        url = config.base_url or PROVIDERS[config.provider].default_base_url
        self.url_policy.check_url(url)

    async def resolve(
        self, config: InstanceConfig, *, source: str = "", implicit: bool = False
    ) -> tuple[InstanceRecord, bool]:
        """The instance for a configuration, created on first sight; True when just created.

        `source` (the caller's address) and `implicit` (created by a proxied request's
        headers) are for the audit log.
        """
        digest = self.digest(config)
        if (yaml_id := self._file.by_digest.get(digest)) is not None:
            return self._file.records[yaml_id], False
        self.check_base_url(config)
        cached = self._cache.get(("cfg", digest))
        if isinstance(cached, str) and cached != GONE:
            try:
                return await self.get(cached), False
            except UnknownInstance:
                pass
        # One creation per configuration per process; the database settles it across processes.
        if (pending := self._inflight.get(digest)) is not None:
            return await asyncio.shield(pending), False
        future: asyncio.Future[InstanceRecord] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            epoch = self._cache.epoch()
            row, created = await self._run(
                self._store.create, digest, self._candidates(digest), partial(self._row, config)
            )
            record = _record(row)
            entries: dict[tuple[str, str], Any] = {
                ("id", record.instance_id): astuple(record),
                ("cfg", digest): record.instance_id,
            }
            if created:
                self._cache.commit({k: (v, RECORD_TTL) for k, v in entries.items()})
                self.audit.record(
                    "implicit_create" if implicit else "create",
                    instance_id=record.instance_id,
                    client=record.client,
                    source=source,
                )
            else:
                self._cache.fill(entries, epoch, expire=RECORD_TTL)
            future.set_result(record)
            return record, created
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters see it; nobody must be told "never retrieved"
            raise
        finally:
            del self._inflight[digest]

    def _candidates(self, digest: str) -> Iterator[str]:
        for attempt in range(64):
            instance_id = candidate_id(digest, attempt)
            if instance_id not in self._file.records:
                yield instance_id

    def _row(
        self,
        config: InstanceConfig,
        instance_id: str,
        master_key_id: str | None,
        *,
        created_at: str | None = None,
        not_at: str = "",
    ) -> Row:
        """A row for `config`; runs inside the store's write transaction (see Store.create)."""
        stamp = now_iso()
        if stamp == not_at:  # same millisecond as the version it replaces: keep it moving
            stamp = stamp[:-1] + "1Z"
        return Row(
            instance_id=instance_id,
            client=config.client,
            provider=config.provider,
            model=config.model,
            api_key=self.keys.encrypt(
                config.api_key, instance_id=instance_id, meta_key_id=master_key_id
            ),
            masked_key=mask_key(config.api_key),
            base_url=config.base_url,
            config_digest=self.digest(config),
            created_at=created_at or stamp,
            updated_at=stamp,
        )

    # -- management ---------------------------------------------------------------------------

    async def list(self) -> list[InstanceRecord]:
        rows: list[Row] = await self._run(self._store.all)
        stored = [_record(r) for r in rows if r.instance_id not in self._file.records]
        return [*self._file.records.values(), *stored]

    async def total(self) -> int:
        """How many instances exist (instances.yaml and stored), counted by SQL off the loop."""
        ids = tuple(self._file.records)
        stored: int = await self._run(self._store.count, ids)
        return len(ids) + stored

    def _refuse_yaml(self, instance_id: str) -> None:
        if instance_id in self._file.records:
            raise ReadOnlyInstance(
                f"Instance {instance_id} is managed in {self._settings.instances_file.name}; "
                "edit that file instead (the gateway re-reads it on change).",
                details={"instance_id": instance_id},
            )

    async def update(
        self, instance_id: str, changes: dict[str, Any], *, source: str = ""
    ) -> InstanceRecord:
        self._refuse_yaml(instance_id)
        unknown = sorted(set(changes) - set(_UPDATABLE))
        if unknown:
            raise InvalidConfig(
                f"unknown field(s) {', '.join(unknown)}; updatable: {', '.join(_UPDATABLE)}.",
                details={"fields": unknown},
            )
        old: Row | None = await self._run(self._store.get, instance_id)
        if old is None:
            raise _unknown(instance_id)
        current = {
            "client": old.client,
            "provider": old.provider,
            "model": old.model,
            "base_url": old.base_url,
            "api_key": self.keys.decrypt(old.api_key, instance_id=instance_id),
        }
        config = InstanceConfig.parse(**(current | changes))
        self.check_base_url(config)
        build = partial(
            self._row, config, instance_id, created_at=old.created_at, not_at=old.updated_at
        )
        keys = [("id", instance_id), ("cfg", old.config_digest)]
        self._cache.begin(keys)
        try:
            row: Row = await self._run(self._store.replace, old, build)
        except BaseException:
            self._cache.abort(keys)
            raise
        record = _record(row)
        entries: dict[tuple[str, str], tuple[Any, float]] = {
            ("id", instance_id): (astuple(record), RECORD_TTL),
            ("cfg", row.config_digest): (instance_id, RECORD_TTL),
        }
        if old.config_digest != row.config_digest:
            entries[("cfg", old.config_digest)] = (GONE, TOMBSTONE_TTL)
        self._cache.commit(entries)
        changed = [name for name in _UPDATABLE if current[name] != getattr(config, name)]
        self.audit.record(
            "update", instance_id=instance_id, client=record.client, source=source, fields=changed
        )
        return record

    async def delete(self, instance_id: str, *, source: str = "") -> None:
        self._refuse_yaml(instance_id)
        keys = [("id", instance_id)]
        self._cache.begin(keys)
        try:
            row: Row | None = await self._run(self._store.delete, instance_id)
        except BaseException:
            self._cache.abort(keys)
            raise
        entries: dict[tuple[str, str], tuple[Any, float]] = {
            ("id", instance_id): (GONE, TOMBSTONE_TTL)
        }
        if row is not None:
            entries[("cfg", row.config_digest)] = (GONE, TOMBSTONE_TTL)
        self._cache.commit(entries)
        self._usage.pop(instance_id, None)
        if row is None:
            raise _unknown(instance_id)
        self.audit.record("delete", instance_id=instance_id, client=row.client, source=source)

    # -- master key rotation --------------------------------------------------------------

    def _rotate(self) -> RotationReport:
        try:
            return rotate(self._store, self.keys, self._cache, _cached)
        finally:
            self._cache.close()  # this worker thread's cache connection

    async def rotate_master_key(self, *, source: str = "cli") -> RotationReport:
        """Re-encrypt every stored key under a new master key (see gateway.instances.rotation)."""
        report: RotationReport = await self._run(self._rotate)
        self.audit.record(
            "rotate",
            source=source,
            key_ids={
                "key_id": report.key_id,
                "previous_key_ids": report.previous_key_ids,
                "retired_key_ids": report.retired,
                "reencrypted": report.reencrypted,
            },
        )
        return report

    # -- usage ----------------------------------------------------------------------------

    def count(self, instance_id: str, **delta: int) -> None:
        """Add to an instance's counters (requests=1, errors=1, prompt_tokens=…); cheap."""
        usage = self._usage.setdefault(instance_id, UsageDelta())
        for name, value in delta.items():
            setattr(usage, name, getattr(usage, name) + value)
        usage.last_used_at = now_iso()

    async def flush_usage(self) -> None:
        if not self._usage:
            return
        pending, self._usage = self._usage, {}
        await self._run(self._store.add_usage, pending)

    async def usage(self, instance_id: str) -> dict[str, Any]:
        await self.flush_usage()
        result: dict[str, Any] = await self._run(self._store.usage, instance_id)
        return result
