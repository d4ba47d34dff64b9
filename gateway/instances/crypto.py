"""API keys at rest: AES-256-GCM under a master key, each ciphertext naming the key that made it.

A ciphertext is `v2.<key_id>.<base64(nonce || ciphertext+tag)>`. Its associated data binds the
instance id, the provider and the base URL the key was registered for: a ciphertext copied onto
another row, or a row whose provider or base URL was edited on disk, does not decrypt, so a key
can only ever be sent where it was registered (issue 9.1). `key_id` is a short fingerprint of
the master key: with several keys loaded (during a rotation) the right one is picked without
trial decryption, and a record made under a key we no longer hold says so.

`v1.` ciphertexts (earlier releases) bound the instance id only. They are read solely to
upgrade them (gateway.instances.upgrade), never to serve a request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "MASTER_KEY_FILE",
    "KeyRing",
    "MasterKey",
    "OldFormat",
    "SealedFor",
    "SecretError",
    "UnknownMasterKey",
    "key_id_of",
]

VERSION = "v2"
OLD_VERSION = "v1"
MASTER_KEY_FILE = "master.key"


class SecretError(Exception):
    """A ciphertext cannot be opened (unknown master key, tampering, or a malformed value)."""


class UnknownMasterKey(SecretError):
    """A ciphertext names a master key that is not loaded."""


class OldFormat(SecretError):
    """A `v1.` ciphertext, which binds the instance id only: upgrade it before use."""


@dataclass(frozen=True, slots=True)
class SealedFor:
    """Where a key may go: what its ciphertext is bound to."""

    instance_id: str
    provider: str
    base_url: str

    def aad(self) -> bytes:
        fields = [self.instance_id, self.provider, self.base_url]
        return b"powermem-gateway key v2\0" + json.dumps(fields).encode()


class MasterKey:
    def __init__(self, material: bytes) -> None:
        if len(material) != 32:
            raise ValueError("a master key is 32 bytes")
        self._aead = AESGCM(material)
        self._material = material
        self.key_id = hashlib.sha256(b"powermem-gateway key id\0" + material).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_file_text(cls, text: str) -> MasterKey:
        return cls(base64.urlsafe_b64decode(text.strip()))

    def file_text(self) -> str:
        """How the key is kept in a key file (base64, one line); handle with care."""
        return base64.urlsafe_b64encode(self._material).decode() + "\n"

    @classmethod
    def from_secret(cls, secret: str) -> MasterKey:
        """A master key stretched from an operator-chosen secret (POWERMEM_GATEWAY_SECRET)."""
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"powermem-gateway",
            info=b"api-key encryption v1",
        )
        return cls(hkdf.derive(secret.encode()))

    def encrypt(self, plaintext: str, sealed_for: SealedFor) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), sealed_for.aad())
        blob = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{VERSION}.{self.key_id}.{blob}"

    def decrypt(self, token: str, sealed_for: SealedFor) -> str:
        version = token.split(".", 1)[0]
        if version == OLD_VERSION:
            raise OldFormat("stored API key is in the v1 format; it must be upgraded first")
        return self._open(token, sealed_for.aad())

    def decrypt_v1(self, token: str, instance_id: str) -> str:
        """Open an earlier release's ciphertext (bound to the instance id only); upgrades only."""
        if token.split(".", 1)[0] != OLD_VERSION:
            raise SecretError("not a v1 ciphertext")
        return self._open(token, instance_id.encode())

    def _open(self, token: str, aad: bytes) -> str:
        try:
            raw = base64.urlsafe_b64decode(token.split(".", 2)[2])
            return self._aead.decrypt(raw[:12], raw[12:], aad).decode()
        except (IndexError, ValueError, InvalidTag):
            raise SecretError("stored API key does not decrypt under its master key") from None


def key_id_of(token: str) -> str:
    parts = token.split(".", 2)
    if len(parts) != 3 or parts[0] not in (VERSION, OLD_VERSION) or not parts[1]:
        raise SecretError("stored API key is not in a known format")
    return parts[1]


class KeyRing:
    """The current master key (encrypts) plus older ones still readable during a rotation."""

    def __init__(self, current: MasterKey, *older: MasterKey) -> None:
        self.current = current
        self._by_id = {k.key_id: k for k in (*older, current)}

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def get(self, key_id: str) -> MasterKey | None:
        return self._by_id.get(key_id)

    def add(self, key: MasterKey) -> None:
        """Make one more key readable (a ring only ever grows while the process runs)."""
        self._by_id.setdefault(key.key_id, key)

    def encrypt(self, plaintext: str, sealed_for: SealedFor) -> str:
        return self.current.encrypt(plaintext, sealed_for)

    def key_for(self, token: str) -> MasterKey:
        key = self._by_id.get(key_id_of(token))
        if key is None:
            raise UnknownMasterKey(
                "stored API key was encrypted under a master key this gateway does not have; "
                "start it with the POWERMEM_GATEWAY_SECRET or master.key it was registered with"
            )
        return key

    def decrypt(self, token: str, sealed_for: SealedFor) -> str:
        return self.key_for(token).decrypt(token, sealed_for)
