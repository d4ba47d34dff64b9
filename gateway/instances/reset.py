"""`secret reset`: drop every stored API key, knowingly, when the master key is lost for good.

With `master.key` gone (and no backup) the stored keys cannot be read by anyone; the gateway
refuses to start rather than make a new key over them (gateway.instances.keystore). This is
the other way out: every instance stays registered under its id, with its masked key shown,
but holds no key until it gets one again, by a registration with the same configuration
(an implicit client does that on its next request) or a PUT with `api_key`. Keyless
instances (ollama, vllm) lose nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gateway.files import ensure_private_dir
from gateway.instances.backends import open_changes, open_store
from gateway.instances.keystore import NEXT_KEY_FILE, KeyStore
from gateway.observe.audit import AuditLog
from gateway.settings import Settings

__all__ = ["ResetReport", "reset_stored_keys"]


@dataclass(frozen=True)
class ResetReport:
    dropped: int  # stored keys forgotten
    key_id: str  # the master key new keys are encrypted under from now on
    removed_key_files: list[str]


def reset_stored_keys(settings: Settings, *, source: str = "cli") -> ResetReport:
    """Forget every stored key and start a fresh master key (blocking; for the CLI)."""
    data_dir = ensure_private_dir(settings.data_dir)
    store = open_store(settings, data_dir)
    changes = open_changes(settings, data_dir, store)
    audit = AuditLog(data_dir)
    try:
        with changes.exclusive():
            dropped = store.drop_ciphertexts(announce=changes)
        # Nothing is encrypted under any old key now: keep none of them lying around.
        removed = []
        for path in [data_dir / NEXT_KEY_FILE, *sorted(data_dir.glob("master-*.key"))]:
            if path.exists():
                os.unlink(path)
                removed.append(path.name)
        keys = KeyStore(data_dir, settings.secret, (), key_prefixes=store.key_prefixes)
        store.set_master_key_id(keys.current.key_id)
        audit.record(
            "secret_reset",
            source=source,
            key_ids={"key_id": keys.current.key_id, "dropped": dropped},
        )
        return ResetReport(dropped, keys.current.key_id, removed)
    finally:
        changes.close()
        store.close()
        audit.close()
