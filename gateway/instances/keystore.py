"""The master keys one gateway process holds: which it reads with, and which it writes with.

Key files in the data dir (all 0600):

- `master.key`: the key at rest, made on first use (unless `POWERMEM_GATEWAY_SECRET` is set);
- `master.key.next`: a new key that `secret rotate` is rotating in;
- `master-<key_id>.key`: an earlier key, kept while some stored ciphertext still needs it.

Every key file present is readable, plus the key from `POWERMEM_GATEWAY_SECRET` and from
`POWERMEM_GATEWAY_PREVIOUS_SECRET`. A `master.key` is generated only while no stored key needs
a key we lack: with it deleted and ciphertexts left, the start is refused (`MasterKeyMissing`)
with the two ways out, restoring the file or `secret reset`, never silently replaced.

Which key *writes* is a fact of the database, not of one process: `meta.master_key_id`,
read inside each writing transaction (see `Store`). A rotation sets it first, so from that
commit on every process on the data dir encrypts under the new key, and the rows written
before it are exactly the ones the rotation re-encrypts. A process that meets a key id it
does not hold re-reads the key files once before giving up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from gateway.errors import MasterKeyMissing, StorageError
from gateway.files import ensure_private_file, write_private_file_once
from gateway.instances.crypto import (
    MASTER_KEY_FILE,
    KeyRing,
    MasterKey,
    SealedFor,
    SecretError,
    UnknownMasterKey,
    key_id_of,
)

__all__ = ["NEXT_KEY_FILE", "KeyStore", "archive_name", "key_ids_in_use"]

log = logging.getLogger("gateway.keys")

NEXT_KEY_FILE = MASTER_KEY_FILE + ".next"


def archive_name(key_id: str) -> str:
    return f"master-{key_id}.key"


def key_ids_in_use(prefixes: dict[str, int]) -> dict[str, int]:
    """Stored keys per master key id, from `Store.key_prefixes()` (unknown formats skipped)."""
    counts: dict[str, int] = {}
    for prefix, count in prefixes.items():
        try:
            key_id = key_id_of(prefix + "x")
        except SecretError:
            continue
        counts[key_id] = counts.get(key_id, 0) + count
    return counts


def read_key_file(path: Path) -> MasterKey | None:
    """The key in a key file, or None if it is gone (renamed by a rotation meanwhile)."""
    try:
        ensure_private_file(path, "master key")
        return MasterKey.from_file_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"Master key file {path.name} in the data dir cannot be read ({exc}); "
            "restore it from a backup or remove it if no stored key needs it."
        ) from None


class KeyStore:
    """Master keys for one data dir: `ring` reads, `for_writing()` picks the writing key.

    `key_prefixes` tells which master keys the stored ciphertexts need (`Store.key_prefixes`);
    it is asked only when `master.key` is missing.
    """

    def __init__(
        self,
        data_dir: Path,
        secret: str | None,
        previous_secrets: tuple[str, ...] = (),
        *,
        key_prefixes: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.data_dir = data_dir
        self.secret_mode = bool(secret)
        older = [MasterKey.from_secret(s) for s in previous_secrets if s]
        current = MasterKey.from_secret(secret) if secret else self._key_file(older, key_prefixes)
        self.ring = KeyRing(current, *older)
        self.reload()

    def _key_file(
        self, older: list[MasterKey], key_prefixes: Callable[[], dict[str, int]]
    ) -> MasterKey:
        path = self.data_dir / MASTER_KEY_FILE
        if (key := read_key_file(path)) is not None:
            return key
        held = {k.key_id for k in older}
        held |= {k.key_id for p in self.key_files() if (k := read_key_file(p)) is not None}
        lost = {k: n for k, n in key_ids_in_use(key_prefixes()).items() if k not in held}
        if lost:
            raise MasterKeyMissing(
                f"{MASTER_KEY_FILE} is missing from the data dir {self.data_dir}, but "
                f"{sum(lost.values())} stored API key(s) were encrypted with it (master key "
                f"{', '.join(sorted(lost))}). The gateway will not make a new one over them. "
                f"Restore {MASTER_KEY_FILE} from your backup, or run `powermem-gateway secret "
                "reset` to drop the stored keys knowingly (instances stay registered; each "
                "needs its API key again).",
                details={"key_ids": sorted(lost), "stored_keys": sum(lost.values())},
            )
        return MasterKey.from_file_text(
            write_private_file_once(path, MasterKey.generate().file_text())
        )

    @property
    def current(self) -> MasterKey:
        """This process's own key (POWERMEM_GATEWAY_SECRET or master.key)."""
        return self.ring.current

    def key_files(self) -> list[Path]:
        names = [MASTER_KEY_FILE, NEXT_KEY_FILE]
        found = [self.data_dir / n for n in names if (self.data_dir / n).exists()]
        return found + sorted(self.data_dir.glob("master-*.key"))

    def reload(self) -> None:
        """Read every key file present; keys already held stay held."""
        for path in self.key_files():
            if (key := read_key_file(path)) is not None:
                self.ring.add(key)

    def ensure(self, key_id: str) -> MasterKey | None:
        """The key with this id, re-reading the key files once if it is not held yet."""
        if key_id not in self.ring:
            self.reload()
        return self.ring.get(key_id)

    def for_writing(self, meta_key_id: str | None) -> MasterKey:
        """The key the database names as current (or ours, if it names none yet)."""
        if meta_key_id is None:
            return self.ring.current
        key = self.ensure(meta_key_id)
        if key is None:
            raise StorageError(
                f"The registry's current master key ({meta_key_id}) is not one this gateway "
                "holds: it was rotated by `powermem-gateway secret rotate`. Restart this "
                "gateway with the POWERMEM_GATEWAY_SECRET that rotation used."
            )
        return key

    def key_for(self, token: str) -> MasterKey:
        """The key that made `token` (raises `UnknownMasterKey`, `SecretError`)."""
        try:
            return self.ring.key_for(token)
        except UnknownMasterKey:
            if self.ensure(key_id_of(token)) is None:
                raise
            return self.ring.key_for(token)

    def decrypt(self, token: str, sealed_for: SealedFor) -> str:
        return self.key_for(token).decrypt(token, sealed_for)

    def encrypt(self, plaintext: str, sealed_for: SealedFor, *, meta_key_id: str | None) -> str:
        return self.for_writing(meta_key_id).encrypt(plaintext, sealed_for)
