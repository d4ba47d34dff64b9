"""Ciphertexts as earlier releases wrote them, to test that they are upgraded, not trusted."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.instances.crypto import MasterKey


def key_file_material(data_dir: Path) -> bytes:
    """The master key bytes of a data dir's `master.key` (key-file mode)."""
    return base64.urlsafe_b64decode((data_dir / "master.key").read_text().strip())


def v1_ciphertext(material: bytes, plaintext: str, instance_id: str) -> str:
    """`v1.<key id>.<blob>`: AES-GCM with the instance id alone as associated data."""
    nonce = os.urandom(12)
    sealed = AESGCM(material).encrypt(nonce, plaintext.encode(), instance_id.encode())
    blob = base64.urlsafe_b64encode(nonce + sealed).decode()
    return f"v1.{MasterKey(material).key_id}.{blob}"
