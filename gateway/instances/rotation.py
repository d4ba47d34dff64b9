"""`secret rotate`: move every stored API key to a new master key, safely against `kill -9`.

Key-file mode (no POWERMEM_GATEWAY_SECRET), each step idempotent, the files telling a rerun
where it stopped:

1. make `master.key.next` (kept if a killed run left one) and copy the current key to
   `master-<id>.key`, so every key stays readable by every process, started when it may;
2. name the new key current in the database (`meta.master_key_id`): writers read it inside
   their transaction, so no row is written under the old key after this commit;
3. re-encrypt every row still under another key (or in the older v1 format), a batch per
   transaction, each row only if it still holds the ciphertext that was read (compare-and-
   set); each batch is announced to every process before it commits
   (gateway.instances.changes), so no process keeps serving a ciphertext under a key about
   to be retired; the associated data (instance id, provider, base URL) stays bound;
4. rename `master.key.next` over `master.key` (atomic);
5. delete every `master-<id>.key` that no stored ciphertext names any more.

A rerun finds `master.key.next` (killed in 1-3: resume with that key) or leftover
`master-<id>.key` files (killed in 4-5: finish), else starts a new rotation.

Secret mode: the new secret is POWERMEM_GATEWAY_SECRET and the old one
POWERMEM_GATEWAY_PREVIOUS_SECRET; steps 2, 3 and 5 run the same way (no file is renamed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import StorageError
from gateway.files import write_private_file_once
from gateway.instances.changes import ChangeLog
from gateway.instances.crypto import (
    MASTER_KEY_FILE,
    OLD_VERSION,
    VERSION,
    MasterKey,
    SealedFor,
    SecretError,
    key_id_of,
)
from gateway.instances.keystore import NEXT_KEY_FILE, KeyStore, archive_name, read_key_file
from gateway.instances.store import Ciphertext, Store

__all__ = ["BATCH", "Progress", "RotationReport", "rotate"]

BATCH = 100
# `progress(handled, total)`: stored keys looked at so far, of how many (for a progress bar).
Progress = Callable[[int, int], None]


@dataclass
class RotationReport:
    key_id: str
    previous_key_ids: list[str] = field(default_factory=list)
    reencrypted: int = 0
    retired: list[str] = field(default_factory=list)
    resumed: bool = False


def _key_ids_in_use(store: Store) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in store.ciphertexts():
        if not c.api_key:
            continue  # dropped by `secret reset`: nothing to re-encrypt
        try:
            key_id = key_id_of(c.api_key)
        except SecretError:
            raise StorageError(
                f"Instance {c.instance_id} holds a stored key in an unknown format; "
                "delete that instance and register it again, then rerun the rotation."
            ) from None
        counts[key_id] = counts.get(key_id, 0) + 1
    return counts


def _archives(keys: KeyStore) -> dict[str, os.PathLike[str]]:
    return {p.name[len("master-") : -len(".key")]: p for p in keys.data_dir.glob("master-*.key")}


def _choose_target(keys: KeyStore, report: RotationReport) -> MasterKey:
    """The key to rotate to: a pending one, the current one if only cleanup is left, or new."""
    if keys.secret_mode:
        return keys.ring.current
    next_path = keys.data_dir / NEXT_KEY_FILE
    current = read_key_file(keys.data_dir / MASTER_KEY_FILE)
    if current is None:
        raise StorageError("master.key is missing from the data dir; restore it first.")
    if (pending := read_key_file(next_path)) is not None:
        report.resumed = True
        target = pending
    elif any(key_id != current.key_id for key_id in _archives(keys)):
        report.resumed = True
        return current
    else:
        target = MasterKey.from_file_text(
            write_private_file_once(next_path, MasterKey.generate().file_text())
        )
    write_private_file_once(keys.data_dir / archive_name(current.key_id), current.file_text())
    keys.ring.add(target)
    return target


def _sweep(
    store: Store, keys: KeyStore, changes: ChangeLog, target: MasterKey, progress: Progress | None
) -> int:
    done = 0
    current = f"{VERSION}.{target.key_id}."
    while True:
        stale = [c for c in store.ciphertexts() if c.api_key and not c.api_key.startswith(current)]
        if not stale:
            return done
        before, total = done, done + len(stale)
        for start in range(0, len(stale), BATCH):
            swaps = [
                (c.instance_id, c.api_key, reseal(keys, target, c))
                for c in stale[start : start + BATCH]
            ]
            with changes.exclusive():
                done += len(store.swap_ciphertexts(swaps, announce=changes))
            if progress is not None:
                progress(before + min(start + BATCH, len(stale)), total)


def reseal(keys: KeyStore, target: MasterKey, c: Ciphertext) -> str:
    """`c`'s key, encrypted under `target` in the current format, bound as its row says."""
    sealed_for = SealedFor(c.instance_id, c.provider, c.base_url)
    try:
        key = keys.key_for(c.api_key)
        if c.api_key.startswith(OLD_VERSION + "."):
            plaintext = key.decrypt_v1(c.api_key, c.instance_id)
        else:
            plaintext = key.decrypt(c.api_key, sealed_for)
    except SecretError:
        raise StorageError(
            f"The stored key of instance {c.instance_id} does not decrypt (damaged or tampered "
            "with); delete that instance and register it again, then rerun the rotation."
        ) from None
    return target.encrypt(plaintext, sealed_for)


def rotate(
    store: Store, keys: KeyStore, changes: ChangeLog, progress: Progress | None = None
) -> RotationReport:
    """Run (or finish) a rotation; blocking, for the registry's worker thread.

    `progress(handled, total)` is called after each batch, on that thread."""
    keys.reload()
    report = RotationReport(key_id="")
    target = _choose_target(keys, report)
    report.key_id = target.key_id
    in_use = _key_ids_in_use(store)
    unreadable = sorted(k for k in in_use if k not in keys.ring)
    if unreadable:
        raise StorageError(
            f"{sum(in_use[k] for k in unreadable)} stored key(s) were encrypted under master "
            f"key(s) {', '.join(unreadable)} that this gateway does not hold; nothing was "
            "changed. Set POWERMEM_GATEWAY_PREVIOUS_SECRET to the old secret (or put the old "
            "master.key back) and run the rotation again."
        )
    report.previous_key_ids = sorted(k for k in in_use if k != target.key_id)
    store.set_master_key_id(target.key_id)
    report.reencrypted = _sweep(store, keys, changes, target, progress)
    next_path = keys.data_dir / NEXT_KEY_FILE
    if not keys.secret_mode and next_path.exists():
        os.replace(next_path, keys.data_dir / MASTER_KEY_FILE)
        _fsync_dir(keys.data_dir)
    in_use = _key_ids_in_use(store)
    for key_id, path in sorted(_archives(keys).items()):
        if key_id == target.key_id:
            if not keys.secret_mode:
                os.unlink(path)  # a copy of what master.key now holds
        elif key_id not in in_use:
            os.unlink(path)
            report.retired.append(key_id)
    _fsync_dir(keys.data_dir)
    return report


def _fsync_dir(path: os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
