"""The registry's management side: listing, updates, deletes, instance secrets, key rotation.

A mixin of `Registry` (gateway.instances.registry), which owns the state named below; kept
apart so each module holds one concern. Writes start from the row as the store holds it (not
from the cache), and go through `CachedStore.write`, so they are announced before they commit.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import GatewayError, InvalidConfig, ReadOnlyInstance, UnknownInstance
from gateway.instances import listing
from gateway.instances.cached_store import CachedStore, to_record
from gateway.instances.credentials import hash_secret, new_secret
from gateway.instances.keyaccess import KeyOpener
from gateway.instances.keystore import KeyStore
from gateway.instances.model import InstanceConfig, InstanceRecord
from gateway.instances.paging import Page
from gateway.instances.rotation import Progress, RotationReport, rotate
from gateway.instances.store import Row
from gateway.instances.usage import UsageBook
from gateway.instances.writes import RowMaker
from gateway.instances.yamlfile import InstancesFile
from gateway.observe.audit import Action, AuditLog
from gateway.policy.baseurls import UrlPolicy
from gateway.providers import PROVIDERS
from gateway.settings import Settings

__all__ = ["UPDATABLE", "RegistryAdmin", "unknown"]

UPDATABLE = ("client", "provider", "model", "api_key", "base_url")
ALLOWED_URLS = 4096  # base URLs remembered as allowed by the policy (oldest forgotten first)


def unknown(instance_id: str) -> UnknownInstance:
    return UnknownInstance(
        f"Instance {instance_id} is not registered (it may have been deleted); "
        "register it again or drop the X-PowerMem-Instance header.",
        details={"instance_id": instance_id},
    )


class RegistryAdmin:
    _settings: Settings
    _data: CachedStore
    _file: InstancesFile
    _rows: RowMaker
    _usage: UsageBook
    _opener: KeyOpener
    keys: KeyStore
    audit: AuditLog
    url_policy: UrlPolicy
    _allowed_urls: dict[str, None]  # bounded: ALLOWED_URLS

    def check_base_url(self, config: InstanceConfig) -> None:
        """Refuse a configuration whose (default) base URL the base-URL policy forbids."""
        url = config.base_url or PROVIDERS[config.provider].default_base_url
        if url in self._allowed_urls:
            return  # the policy is fixed for the process and check_url resolves no names
        self.url_policy.check_url(url)
        if len(self._allowed_urls) >= ALLOWED_URLS:
            del self._allowed_urls[next(iter(self._allowed_urls))]
        self._allowed_urls[url] = None

    # -- listing ---------------------------------------------------------------------------------

    async def list(self) -> list[InstanceRecord]:
        """Every instance (instances.yaml first). O(instances): for the CLI, not the API."""
        return await listing.everything(self._data, self._file)

    async def page(
        self,
        limit: int,
        cursor: str | None = None,
        client: str | None = None,
        provider: str | None = None,
    ) -> Page:
        return await listing.page(self._data, self._file, limit, cursor, client, provider)

    async def total(self, client: str | None = None, provider: str | None = None) -> int:
        return await listing.total(self._data, self._file, client, provider)

    def _refuse_yaml(self, instance_id: str) -> None:
        if instance_id in self._file.records:
            raise ReadOnlyInstance(
                f"Instance {instance_id} is managed in {self._settings.instances_file.name}; "
                "edit that file instead (the gateway re-reads it on change).",
                details={"instance_id": instance_id},
            )

    async def _stored_row(self, instance_id: str) -> Row:
        """The row as the store holds it now (not the cache: a write starts from the truth)."""
        self._refuse_yaml(instance_id)
        row, _ = await self._data.read(self._data.store.get, instance_id)
        if row is None:
            raise unknown(instance_id)
        return row

    async def update(
        self, instance_id: str, changes: dict[str, Any], *, source: str = ""
    ) -> InstanceRecord:
        """Change any of the fields; the id stays. A new provider or base URL needs the key."""
        self._refuse_yaml(instance_id)
        unknown_fields = sorted(set(changes) - set(UPDATABLE))
        if unknown_fields:
            raise InvalidConfig(
                f"unknown field(s) {', '.join(unknown_fields)}; updatable: {', '.join(UPDATABLE)}.",
                details={"fields": unknown_fields},
            )
        old = await self._stored_row(instance_id)
        current = {k: getattr(old, k) for k in ("client", "provider", "model", "base_url")}
        if "api_key" not in changes:
            current["api_key"] = self._opener.open(to_record(old))
        config = InstanceConfig.parse(**(current | changes))
        if "api_key" not in changes and (config.provider, config.base_url) != (
            old.provider,
            old.base_url,
        ):
            raise InvalidConfig(
                "Changing provider or base_url needs api_key in the same request: a stored "
                "key is only ever sent where it was registered. Nothing was changed.",
                details={"field": "api_key"},
            )
        self.check_base_url(config)
        data = self._data
        row, at = await data.write(data.store.replace, old, self._rows.replacement(config, old))
        (record,) = data.remember(
            at,
            [row],
            gone_digests=[old.config_digest] if old.config_digest != row.config_digest else [],
        )
        changed = [n for n in ("client", "provider", "model") if getattr(config, n) != current[n]]
        changed += ["base_url"] if config.base_url != old.base_url else []
        if "api_key" in changes and self._key_changed(old, config.api_key):
            changed.append("api_key")
        self.audit.record(
            "update", instance_id=instance_id, client=record.client, source=source, fields=changed
        )
        return record

    def _key_changed(self, old: Row, new_key: str) -> bool:
        try:
            return self._opener.open(to_record(old)) != new_key
        except GatewayError:
            return True  # unreadable before (tampered, dropped): the new key replaces it

    async def delete(self, instance_id: str, *, source: str = "") -> None:
        self._refuse_yaml(instance_id)
        data = self._data
        row, at = await data.write(data.store.delete, instance_id)
        digests = [row.config_digest] if row is not None else []
        data.remember(at, gone_ids=[instance_id], gone_digests=digests)
        self._usage.drop(instance_id)
        if row is None:
            raise unknown(instance_id)
        self.audit.record("delete", instance_id=instance_id, client=row.client, source=source)

    # -- instance secrets ---------------------------------------------------------------------

    async def rotate_secret(self, instance_id: str, *, source: str = "") -> str:
        """A new secret for the instance (the old one stops working); shown this once."""
        secret = new_secret()
        await self._set_secret(instance_id, hash_secret(secret), "secret_rotate", source)
        return secret

    async def revoke_secret(self, instance_id: str, *, source: str = "") -> None:
        """No secret any more: on a shared gateway the id cannot bind until one is rotated in."""
        await self._set_secret(instance_id, "", "secret_revoke", source)

    async def _set_secret(
        self, instance_id: str, secret_hash: str, action: Action, source: str
    ) -> None:
        self._refuse_yaml(instance_id)
        data = self._data
        row, at = await data.write(data.store.set_secret_hash, instance_id, secret_hash)
        if row is None:
            data.remember(at, gone_ids=[instance_id])
            raise unknown(instance_id)
        data.remember(at, [row])
        self.audit.record(action, instance_id=instance_id, client=row.client, source=source)

    # -- master key rotation --------------------------------------------------------------

    async def rotate_master_key(
        self, *, source: str = "cli", progress: Progress | None = None
    ) -> RotationReport:
        """Re-encrypt every stored key under a new master key (see gateway.instances.rotation).

        `progress(handled, total)` is called from the registry's worker thread."""
        data = self._data
        report = await data.run(rotate, data.store, self.keys, data.changes, progress)
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
