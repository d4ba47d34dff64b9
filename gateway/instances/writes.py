"""How the registry turns a configuration into a row: sealed key, masked key, digest, times.

The builders run inside the store's write transaction, with the master key id the store
names as current there (gateway.instances.keystore), so no row is ever written under a key
a rotation has just retired.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.instances.crypto import SealedFor
from gateway.instances.keystore import KeyStore
from gateway.instances.model import InstanceConfig, mask_key
from gateway.instances.store import BuildNew, BuildReplacement, Row, now_iso

__all__ = ["RowMaker"]


class RowMaker:
    def __init__(self, keys: KeyStore, digest: Callable[[InstanceConfig], str]) -> None:
        self._keys = keys
        self._digest = digest

    def seal(self, config: InstanceConfig, instance_id: str, master_key_id: str | None) -> str:
        """The configuration's key, encrypted and bound to where it may go."""
        sealed_for = SealedFor(instance_id, config.provider, config.base_url)
        return self._keys.encrypt(config.api_key, sealed_for, meta_key_id=master_key_id)

    def _row(
        self,
        config: InstanceConfig,
        instance_id: str,
        master_key_id: str | None,
        *,
        created_at: str | None,
        not_at: str,
        source: str,
        secret_hash: str,
    ) -> Row:
        stamp = now_iso()
        if not_at and stamp <= not_at:
            # Same millisecond as the version it replaces (or a clock step back): a version
            # stamp must still move forward, it is what a concurrent update is checked by.
            later = datetime.fromisoformat(not_at.replace("Z", "+00:00")) + timedelta(
                milliseconds=1
            )
            stamp = later.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return Row(
            instance_id=instance_id,
            client=config.client,
            provider=config.provider,
            model=config.model,
            api_key=self.seal(config, instance_id, master_key_id),
            masked_key=mask_key(config.api_key),
            base_url=config.base_url,
            config_digest=self._digest(config),
            created_at=created_at or stamp,
            updated_at=stamp,
            source=source,
            secret_hash=secret_hash,
        )

    def new(self, config: InstanceConfig, *, source: str, secret_hash: str) -> BuildNew:
        def build(instance_id: str, master_key_id: str | None) -> Row:
            return self._row(
                config,
                instance_id,
                master_key_id,
                created_at=None,
                not_at="",
                source=source,
                secret_hash=secret_hash,
            )

        return build

    def replacement(self, config: InstanceConfig, old: Row) -> BuildReplacement:
        def build(master_key_id: str | None) -> Row:
            return self._row(
                config,
                old.instance_id,
                master_key_id,
                created_at=old.created_at,
                not_at=old.updated_at,
                source=old.source,
                secret_hash=old.secret_hash,
            )

        return build
