"""Opening a stored key for the one outbound call that needs it, or refusing with a reason.

A key whose row was changed outside the gateway (its provider or base URL edited on disk)
fails its integrity check: it is refused with `StoredKeyRejected`, logged and audited once
per ciphertext, and never returned (issue 9.1).
"""

from __future__ import annotations

import logging

from gateway.errors import StorageError, StoredKeyRejected, StoredKeyUnavailable
from gateway.instances.crypto import OldFormat, SealedFor, SecretError, UnknownMasterKey
from gateway.instances.keystore import KeyStore
from gateway.instances.model import InstanceRecord
from gateway.observe.audit import AuditLog

__all__ = ["REJECTED_AUDITED", "KeyOpener"]

log = logging.getLogger("gateway.registry")

REJECTED_AUDITED = 1024  # bound on the ciphertexts whose rejection was audited already


class KeyOpener:
    def __init__(self, keys: KeyStore, audit: AuditLog) -> None:
        self._keys = keys
        self._audit = audit
        self._rejected: dict[str, None] = {}  # see REJECTED_AUDITED

    def open(self, record: InstanceRecord) -> str:
        if not record.encrypted_key:
            if not record.masked_key:
                return ""  # a keyless instance: nothing was lost
            raise StoredKeyUnavailable(
                f"Instance {record.instance_id} has no stored key (dropped by `secret reset`); "
                "register it again with its key, or send api_key with PUT.",
                details={"instance_id": record.instance_id},
            )
        sealed_for = SealedFor(record.instance_id, record.provider, record.base_url)
        try:
            return self._keys.decrypt(record.encrypted_key, sealed_for)
        except UnknownMasterKey as exc:
            raise StorageError(f"Instance {record.instance_id}: {exc}") from None
        except OldFormat:
            raise StoredKeyUnavailable(
                f"Instance {record.instance_id} holds its key in the old v1 format, which "
                "could not be upgraded; send api_key with PUT, or run `secret rotate`.",
                details={"instance_id": record.instance_id},
            ) from None
        except SecretError:
            raise self._rejected_key(record) from None

    def _rejected_key(self, record: InstanceRecord) -> StoredKeyRejected:
        if record.encrypted_key not in self._rejected:
            self._rejected[record.encrypted_key] = None
            if len(self._rejected) > REJECTED_AUDITED:
                del self._rejected[next(iter(self._rejected))]
            self._audit.record("key_rejected", instance_id=record.instance_id, client=record.client)
            log.error(
                "instance %s: stored key does not match its provider and base URL; refused",
                record.instance_id,
            )
        return StoredKeyRejected(
            f"Instance {record.instance_id} was changed outside the gateway: its stored key "
            "does not match its provider and base URL, so it will not be used. Set its key "
            "again (PUT with api_key and base_url) or delete the instance.",
            details={"instance_id": record.instance_id},
        )
