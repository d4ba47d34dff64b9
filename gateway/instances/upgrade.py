"""Stored keys in the v1 format (bound to the instance id only) become v2 when a registry opens.

v2 binds the key to the instance's provider and base URL too (gateway.instances.crypto), and
the request path reads v2 only, so the upgrade runs before a process serves anything. It binds
the provider and base URL as the row holds them at that moment: an edit made on disk *before*
the upgrade cannot be told apart from a real registration (v1 never recorded them), which
is why it runs at the first start of this version rather than lazily on first use.

Idempotent and safe with several processes: each row is swapped only if it still holds the
v1 ciphertext that was read (compare-and-set), announced like any change. A row that does not
decrypt (a master key we lack, or damage) is left alone and refused when used, as before.
"""

from __future__ import annotations

import logging

from gateway.errors import StorageError
from gateway.instances.crypto import OLD_VERSION
from gateway.instances.keystore import KeyStore
from gateway.instances.rotation import BATCH, reseal
from gateway.instances.store import Changes, Store

__all__ = ["upgrade_ciphertexts"]

log = logging.getLogger("gateway.registry")


def upgrade_ciphertexts(store: Store, keys: KeyStore, changes: Changes) -> int:
    """Re-seal every v1 ciphertext as v2; returns how many rows were upgraded."""
    if not any(p.startswith(OLD_VERSION + ".") for p in store.key_prefixes()):
        return 0
    old = [c for c in store.ciphertexts() if c.api_key.startswith(OLD_VERSION + ".")]
    done = skipped = 0
    for start in range(0, len(old), BATCH):
        target = keys.for_writing(store.master_key_id())
        swaps = []
        for c in old[start : start + BATCH]:
            try:
                swaps.append((c.instance_id, c.api_key, reseal(keys, target, c)))
            except StorageError as exc:  # reported; the row is left as it is
                skipped += 1
                log.warning(
                    "stored key of instance %s not upgraded to the v2 format: %s",
                    c.instance_id,
                    exc.message,
                )
        with changes.exclusive():
            done += len(store.swap_ciphertexts(swaps, announce=changes))
    log.info("upgraded %d stored key(s) to the v2 format (%d left as they were)", done, skipped)
    return done
