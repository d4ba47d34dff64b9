"""The master keys one gateway process holds: which it reads with, and which it writes with.

Key files in the data dir (all 0600):

- `master.key`: the key at rest, made on first use (unless `POWERMEM_GATEWAY_SECRET` is set);
- `master.key.next`: a new key that `secret rotate` is rotating in;
- `master-<key_id>.key`: an earlier key, kept while some stored ciphertext still needs it.

Every key file present is readable, plus the key from `POWERMEM_GATEWAY_SECRET` and from
`POWERMEM_GATEWAY_PREVIOUS_SECRET`. Which key *writes* is a fact of the database, not of one
process: `meta.master_key_id`, read inside each writing transaction (see `Store`). A rotation
sets it first, so from that commit on every process on the data dir encrypts under the new key,
and the rows written before it are exactly the ones the rotation re-encrypts. A process that
meets a key id it does not hold re-reads the key files once before giving up.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gateway.errors import StorageError
from gateway.files import write_private_file_once
from gateway.instances.crypto import (
    MASTER_KEY_FILE,
    KeyRing,
    MasterKey,
    UnknownMasterKey,
    key_id_of,
)

__all__ = ["NEXT_KEY_FILE", "KeyStore", "archive_name"]

log = logging.getLogger("gateway.keys")

NEXT_KEY_FILE = MASTER_KEY_FILE + ".next"


def archive_name(key_id: str) -> str:
    return f"master-{key_id}.key"


def read_key_file(path: Path) -> MasterKey | None:
    """The key in a key file, or None if it is gone (renamed by a rotation meanwhile)."""
    try:
        return MasterKey.from_file_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"Master key file {path.name} in the data dir cannot be read ({exc}); "
            "restore it from a backup or remove it if no stored key needs it."
        ) from None


class KeyStore:
    """Master keys for one data dir: `ring` reads, `for_writing()` picks the writing key."""

    def __init__(
        self, data_dir: Path, secret: str | None, previous_secrets: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = data_dir
        self.secret_mode = bool(secret)
        if secret:
            current = MasterKey.from_secret(secret)
        else:
            current = MasterKey.from_file_text(
                write_private_file_once(
                    data_dir / MASTER_KEY_FILE, MasterKey.generate().file_text()
                )
            )
        self.ring = KeyRing(current, *(MasterKey.from_secret(s) for s in previous_secrets if s))
        self.reload()

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

    def _ensure(self, key_id: str) -> MasterKey | None:
        if key_id not in self.ring:
            self.reload()
        return self.ring.get(key_id)

    def for_writing(self, meta_key_id: str | None) -> MasterKey:
        """The key the database names as current (or ours, if it names none yet)."""
        if meta_key_id is None:
            return self.ring.current
        key = self._ensure(meta_key_id)
        if key is None:
            raise StorageError(
                f"The registry's current master key ({meta_key_id}) is not one this gateway "
                "holds: it was rotated by `powermem-gateway secret rotate`. Restart this "
                "gateway with the POWERMEM_GATEWAY_SECRET that rotation used."
            )
        return key

    def decrypt(self, token: str, *, instance_id: str) -> str:
        try:
            return self.ring.decrypt(token, instance_id=instance_id)
        except UnknownMasterKey:
            if self._ensure(key_id_of(token)) is None:
                raise
            return self.ring.decrypt(token, instance_id=instance_id)

    def encrypt(self, plaintext: str, *, instance_id: str, meta_key_id: str | None) -> str:
        return self.for_writing(meta_key_id).encrypt(plaintext, instance_id=instance_id)
