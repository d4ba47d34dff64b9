"""The registry: the store of record, instances.yaml on top, this process's cache in front.

A bound request costs one dict lookup and one change-counter read when the record is cached
(gateway.instances.cached_store); a miss reads the store on the registry's worker thread.
Every write announces itself to every process on the data dir before it commits
(gateway.instances.changes), so once an update or delete has answered, no process serves the
old configuration. Every change is also appended to the audit log.

The package, in the order a lookup meets it:

    registry      Registry: lookups, resolve/register with the caps (this module)
    admin         its management half: listing, update, delete, instance secrets, rotation
    yamlfile      instances.yaml entries (pydantic), problems reported per entry
    cache         this process's records, checked against changes (the change file)
    cached_store  the store seen through that cache, on one worker thread
    store         the Store protocol; sqlite_db/_store/_keys/_usage and pg_db/_store/_keys/
                  _usage implement it, backends picks one (and pg_feed: PostgreSQL's changes)
    crypto        AES-GCM ciphertexts bound to id, provider and base URL; keystore: which keys
    keyaccess     opening a key for a call, or refusing it; credentials: instance secrets
    writes        configuration → row; usage: counters; listing/paging: pages and totals
    rotation      `secret rotate`; upgrade: v1 → v2 at open; reset: `secret reset`
    housekeeping  the change file's health, expiry of idle implicit instances
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from gateway.errors import (
    StorageError,
)
from gateway.files import ensure_private_dir
from gateway.instances import housekeeping
from gateway.instances.admin import RegistryAdmin, unknown
from gateway.instances.backends import check_master_key, describe, open_changes, open_store
from gateway.instances.cached_store import CachedStore
from gateway.instances.credentials import hash_secret, new_secret, secret_matches
from gateway.instances.keyaccess import KeyOpener
from gateway.instances.keystore import KeyStore
from gateway.instances.model import InstanceConfig, InstanceRecord, candidate_id, config_digest
from gateway.instances.parsed import ParsedConfigs
from gateway.instances.upgrade import upgrade_ciphertexts
from gateway.instances.usage import UsageBook, current_hour, shape
from gateway.instances.writes import RowMaker
from gateway.instances.yamlfile import InstancesFile
from gateway.observe.audit import AuditLog
from gateway.policy.baseurls import UrlPolicy
from gateway.policy.ratelimit import RateLimits
from gateway.settings import Settings

__all__ = ["Registration", "Registry"]

log = logging.getLogger("gateway.registry")

# Audit entries waiting for the shared store (a flush is about once a second); beyond it the
# oldest go first, and audit.log in the data dir still holds every one of them.
AUDIT_PENDING = 10_000


@dataclass(frozen=True)
class Registration:
    """What an explicit registration answers; `secret` is shown this once (shared mode)."""

    record: InstanceRecord
    created: bool
    secret: str | None = None


class Registry(RegistryAdmin):
    """Every instance the gateway knows; open with `await Registry.open(settings)`."""

    def __init__(self, settings: Settings, *, limits: RateLimits | None = None) -> None:
        self._settings = settings
        self.shared = settings.is_shared
        self.url_policy = UrlPolicy.from_settings(settings)
        self._allowed_urls = {}
        self.limits = limits or RateLimits(
            instance_per_minute=settings.instance_rate_limit,
            registrations_per_hour=settings.new_instances_per_client_per_hour,
            redis_url=settings.redis_url,
        )
        data_dir = ensure_private_dir(settings.data_dir)
        with ExitStack() as undo:  # a refused start leaves no database or file open
            store = open_store(settings, data_dir)
            undo.callback(store.close)
            self.keys = KeyStore(
                data_dir,
                settings.secret,
                settings.previous_secrets,
                key_prefixes=store.key_prefixes,
            )
            check_master_key(store, self.keys)
            changes = open_changes(settings, data_dir, store)
            undo.callback(changes.close)
            self._id_key = store.id_key()
            upgrade_ciphertexts(store, self.keys, changes)
            # On a shared store every replica's audit entries also go to the database.
            self._audit_pending: deque[dict[str, object]] = deque(maxlen=AUDIT_PENDING)
            forward = self._audit_pending.append if store.remote else None
            self.audit = AuditLog(data_dir, forward=forward)
            undo.callback(self.audit.close)
            self._file = InstancesFile(
                settings.instances_file,
                seal=lambda key, sealed_for: self.keys.current.encrypt(key, sealed_for),
                digest=self.digest,
            )
            self._file.reload()
            undo.pop_all()
        self._data = CachedStore(store, changes)
        self._rows = RowMaker(self.keys, self.digest)
        self.parsed = ParsedConfigs(self.digest)
        self._usage = UsageBook()
        # One creation per configuration in flight; bounded by the requests in flight.
        self._inflight: dict[str, asyncio.Future[tuple[InstanceRecord, bool, str | None]]] = {}
        self._opener = KeyOpener(self.keys, self.audit)
        self.expiry = housekeeping.Expiry(settings.implicit_instance_ttl)

    @classmethod
    async def open(cls, settings: Settings, *, limits: RateLimits | None = None) -> Registry:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: cls(settings, limits=limits))

    async def close(self) -> None:
        try:
            await self.flush_audit()
            await self.flush_usage()
        except StorageError as exc:
            log.warning("closing with counters or audit entries not written: %s", exc.message)
        await self._data.close()
        self.audit.close()

    @property
    def database(self) -> str:
        """Which store of record: `sqlite` or `postgresql`."""
        return describe(self._data.store)

    async def database_health(self) -> dict[str, object]:
        """The store of record as readiness reports it; raises `StorageError` when it is down."""
        data = self._data
        await data.run(data.store.ping)
        report: dict[str, object] = {"kind": self.database, "reachable": True}
        if data.store.remote:
            caching = bool(getattr(data.changes, "caching", False))
            report["cache"] = "listen" if self._settings.registry_cache else "off"
            report["cache_lease"] = caching
        return report

    async def flush_audit(self) -> None:
        """Audit entries recorded since the last flush, into the shared store's trail."""
        pending = list(self._audit_pending)
        if not pending:
            return
        self._audit_pending.clear()
        try:
            await self._data.run(self._data.store.add_audit, pending)
        except StorageError:
            self._audit_pending.extendleft(reversed(pending))
            raise

    @property
    def store(self) -> CachedStore:
        """The store of record behind this process's cache (for listings and maintenance)."""
        return self._data

    @property
    def file_problems(self) -> list[str]:
        """What is wrong with instances.yaml as last read (status and doctor show it)."""
        return list(self._file.problems)

    def reload_instances_file(self) -> bool:
        """Re-read instances.yaml if it changed; True when the instances in force changed."""
        return self._file.reload()

    async def housekeeping(self) -> None:
        """About once a second: instances.yaml, usage, the change file, expired instances."""
        self._file.reload()
        await self.flush_usage()
        await self.flush_audit()
        await housekeeping.tick(self._data, self.audit, self.expiry)

    async def expire_idle(self) -> int:
        """Delete implicit instances unused for `implicit_instance_ttl`; how many went."""
        await self.flush_usage()
        return await housekeeping.expire_idle(self._data, self.audit, self.expiry.ttl)

    # -- lookups (the request path) -----------------------------------------------------------

    def digest(self, config: InstanceConfig) -> str:
        return config_digest(self._id_key, config)

    async def get(self, instance_id: str) -> InstanceRecord:
        found = self._file.records.get(instance_id)
        if found is None and (found := await self._data.record(instance_id)) is None:
            raise unknown(instance_id)
        return found

    def api_key(self, record: InstanceRecord) -> str:
        """The plaintext key, for the one outbound call that needs it (to its own base URL)."""
        return self._opener.open(record)

    def verify_secret(self, record: InstanceRecord, secret: str | None) -> bool:
        """Whether `secret` may bind `record` by id; constant time in the secret.

        Without a secret: allowed unless the gateway is shared. With one: it must match.
        """
        if not secret:
            return not self.shared
        return secret_matches(record.secret_hash, secret)

    async def resolve(
        self,
        config: InstanceConfig,
        *,
        source: str = "",
        implicit: bool = False,
        privileged: bool = False,
        digest: str | None = None,
    ) -> tuple[InstanceRecord, bool]:
        """The instance for a configuration, created on first sight; True when just created.

        `source` is the caller's address (audit log, per-address cap); `implicit` marks a
        creation by a proxied request's headers; `privileged` (the admin token) skips the
        caps on new instances; `digest`, when the caller has it (`parsed`), saves the HMAC.
        No secret is issued here: see `register`.
        """
        record, created, _ = await self._resolve(
            config, source, implicit, privileged, False, digest
        )
        return record, created

    async def register(
        self, config: InstanceConfig, *, source: str = "", privileged: bool = False
    ) -> Registration:
        """An explicit registration: on a shared gateway a new instance gets its secret."""
        return Registration(*await self._resolve(config, source, False, privileged, self.shared))

    async def _resolve(
        self,
        config: InstanceConfig,
        source: str,
        implicit: bool,
        privileged: bool,
        secret: bool,
        digest: str | None = None,
    ) -> tuple[InstanceRecord, bool, str | None]:
        digest = digest or self.digest(config)
        if (yaml_id := self._file.by_digest.get(digest)) is not None:
            return self._file.records[yaml_id], False, None
        self.check_base_url(config)
        found = await self._data.by_digest(digest)
        if found is not None:
            return await self._existing(found, config, implicit), False, None
        # One creation per configuration per process; the database settles it across processes.
        if (pending := self._inflight.get(digest)) is not None:
            record, _, _ = await asyncio.shield(pending)
            return record, False, None
        future = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            result = await self._create(config, digest, source, implicit, privileged, secret)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters see it; nobody must be told "never retrieved"
            raise
        finally:
            del self._inflight[digest]

    async def _existing(
        self, record: InstanceRecord, config: InstanceConfig, implicit: bool
    ) -> InstanceRecord:
        """A found instance, healed where the caller just proved what it lacks."""
        data = self._data
        if not record.encrypted_key and config.api_key:
            # Its key was dropped by `secret reset`; the caller has just shown it again.
            meta_key_id = await data.run(data.store.master_key_id)
            sealed = self._rows.seal(config, record.instance_id, meta_key_id)
            swap = [(record.instance_id, "", sealed)]
            rows, at = await data.write(data.store.swap_ciphertexts, swap)
            record = data.remember(at, rows)[0] if rows else record
        if not implicit and record.source == "implicit":
            row, at = await data.write(data.store.set_source, record.instance_id, "api")
            record = data.remember(at, [row])[0] if row else record
        return record

    async def _create(
        self,
        config: InstanceConfig,
        digest: str,
        source: str,
        implicit: bool,
        privileged: bool,
        with_secret: bool,
    ) -> tuple[InstanceRecord, bool, str | None]:
        if not privileged:
            await self.limits.admit_registration(source)
        secret = new_secret() if with_secret else None
        build = self._rows.new(
            config,
            source="implicit" if implicit else "api",
            secret_hash=hash_secret(secret) if secret else "",
        )
        data = self._data
        cap = 0 if privileged else self._settings.max_instances
        (row, created), at = await data.write(
            data.store.create, digest, self._candidates(digest), build, max_total=cap
        )
        (record,) = data.remember(at, [row])
        if not created:
            return record, False, None
        self.audit.record(
            "implicit_create" if implicit else "create",
            instance_id=record.instance_id,
            client=record.client,
            source=source,
        )
        return record, True, secret

    def _candidates(self, digest: str) -> Iterator[str]:
        for attempt in range(64):
            instance_id = candidate_id(digest, attempt)
            if instance_id not in self._file.records:
                yield instance_id

    # -- usage ----------------------------------------------------------------------------

    def count(self, instance_id: str, **delta: int) -> None:
        """Add to an instance's counters (requests=1, errors=1, relay_calls=1, …); cheap."""
        self._usage.count(instance_id, **delta)

    def llm_failed(self, instance_id: str, status: int, reason: str) -> None:
        """Record a failed LLM call: `llm_errors`, `last_llm_error` and the hourly chart."""
        self._usage.llm_failed(instance_id, status, reason)

    async def flush_usage(self) -> None:
        pending = self._usage.take()
        if not pending:
            return
        try:
            await self._data.run(self._data.store.add_usage, pending)
        except StorageError:
            self._usage.give_back(pending)
            raise

    async def usage(self, instance_id: str) -> dict[str, Any]:
        return (await self.usage_many([instance_id]))[instance_id]

    async def usage_many(self, instance_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Usage of several instances at once (a page of the list)."""
        await self.flush_usage()
        hour = current_hour()
        store = self._data.store
        raw = await self._data.run(store.usage, instance_ids, since_hour=hour - 23)
        return {i: shape(u, hour) for i, u in raw.items()}
