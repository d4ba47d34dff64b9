"""API keys at rest: authenticated encryption under a master key that each ciphertext names."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.instances.crypto import KeyRing, MasterKey, SealedFor, SecretError
from gateway.instances.keystore import KeyStore
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.settings import Settings
from tests.keyformats import v1_ciphertext

KEY = "sk-test-crypto-0123456789abcdef"
INSTANCE = "pmem-0123456789abcdef"
HERE = SealedFor(INSTANCE, "openai", "")


def fresh_key() -> MasterKey:
    return MasterKey(os.urandom(32))


def test_roundtrip_gives_the_plaintext_back() -> None:
    """What is encrypted for an instance decrypts to the same text for that instance."""
    key = fresh_key()
    token = key.encrypt(KEY, HERE)
    assert KEY not in token
    assert key.decrypt(token, HERE) == KEY


def test_each_encryption_uses_a_fresh_nonce() -> None:
    """Encrypting the same key twice gives two different ciphertexts."""
    key = fresh_key()
    assert key.encrypt(KEY, HERE) != key.encrypt(KEY, HERE)


@pytest.mark.parametrize(
    "elsewhere",
    [
        SealedFor("pmem-fedcba9876543210", "openai", ""),
        SealedFor(INSTANCE, "deepseek", ""),
        SealedFor(INSTANCE, "openai", "https://attacker.example/v1"),
        SealedFor(INSTANCE, "openai", " "),
    ],
)
def test_ciphertext_is_bound_to_instance_provider_and_base_url(elsewhere: SealedFor) -> None:
    """A ciphertext opened for another instance, provider or base URL does not decrypt."""
    key = fresh_key()
    token = key.encrypt(KEY, HERE)
    with pytest.raises(SecretError):
        key.decrypt(token, elsewhere)


def test_old_v1_ciphertexts_open_only_through_the_upgrade_path() -> None:
    """A v1 ciphertext (bound to the id only) is refused by `decrypt`, read by `decrypt_v1`."""
    material = os.urandom(32)
    key = MasterKey(material)
    token = v1_ciphertext(material, KEY, INSTANCE)
    with pytest.raises(SecretError, match="v1"):
        key.decrypt(token, HERE)
    assert key.decrypt_v1(token, INSTANCE) == KEY
    with pytest.raises(SecretError):
        key.decrypt_v1(token, "pmem-fedcba9876543210")


@pytest.mark.parametrize("position", [0, 5, 20, -1])
def test_tampered_ciphertext_is_refused(position: int) -> None:
    """Flipping any bit of nonce, ciphertext or tag raises `SecretError`."""
    key = fresh_key()
    version, key_id, blob = key.encrypt(KEY, HERE).split(".")
    raw = bytearray(base64.urlsafe_b64decode(blob))
    raw[position] ^= 0x01
    tampered = f"{version}.{key_id}.{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(SecretError):
        key.decrypt(tampered, HERE)


@pytest.mark.parametrize("token", ["", "v2", "v2.abc", "v2.abc.!!!", "v3.x.AAAA", "plain-text"])
def test_malformed_ciphertext_is_refused(token: str) -> None:
    """Values that are not ciphertexts at all raise `SecretError`, never something else."""
    ring = KeyRing(fresh_key())
    with pytest.raises(SecretError):
        ring.decrypt(token, HERE)


def test_ciphertext_records_the_key_id() -> None:
    """The second dot-separated part of a ciphertext is the id of the key that made it."""
    key = fresh_key()
    version, key_id, _ = key.encrypt(KEY, HERE).split(".")
    assert (version, key_id) == ("v2", key.key_id)
    assert len(key.key_id) == 12
    assert key.key_id != fresh_key().key_id


def test_rotation_reads_old_ciphertexts_and_writes_new_ones() -> None:
    """A key ring with the old key loaded decrypts old values and encrypts under the new key."""
    old, new = fresh_key(), fresh_key()
    token = old.encrypt(KEY, HERE)
    ring = KeyRing(new, old)
    assert ring.decrypt(token, HERE) == KEY
    assert ring.encrypt(KEY, HERE).split(".")[1] == new.key_id


def test_wrong_master_key_is_a_clear_error() -> None:
    """A ciphertext from a key the ring lacks names the way out: the original secret."""
    token = fresh_key().encrypt(KEY, HERE)
    with pytest.raises(SecretError) as caught:
        KeyRing(fresh_key()).decrypt(token, HERE)
    assert "POWERMEM_GATEWAY_SECRET" in str(caught.value)
    assert "master key" in str(caught.value)


def test_master_key_repr_shows_only_its_id() -> None:
    """A master key's repr is its id, never its material."""
    material = os.urandom(32)
    key = MasterKey(material)
    assert repr(key) == f"MasterKey(key_id={key.key_id!r})"
    assert base64.urlsafe_b64encode(material).decode() not in repr(key)


def test_master_key_must_be_32_bytes() -> None:
    """Material of the wrong length is refused."""
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey(b"short")


def test_secret_derives_a_stable_key_and_writes_no_file(tmp_path: Path) -> None:
    """With POWERMEM_GATEWAY_SECRET the key comes from it, and no key file appears."""
    first = KeyStore(tmp_path, "correct horse battery staple").current
    second = KeyStore(tmp_path, "correct horse battery staple").current
    assert first.key_id == second.key_id
    assert KeyStore(tmp_path, "another secret").current.key_id != first.key_id
    assert not (tmp_path / "master.key").exists()


def test_without_secret_a_private_key_file_is_made_once(tmp_path: Path) -> None:
    """Without a secret, a 0600 key file is generated on first use and reused after."""
    first = KeyStore(tmp_path, None).current
    path = tmp_path / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(path.read_text().strip())) == 32
    assert KeyStore(tmp_path, None).current.key_id == first.key_id
    assert KeyStore(tmp_path, "a secret").current.key_id != first.key_id


def test_a_loose_key_file_is_made_private_at_start(tmp_path: Path) -> None:
    """A master.key left readable by others (a careless restore) is 0600 again after a start."""
    first = KeyStore(tmp_path, None).current
    path = tmp_path / "master.key"
    os.chmod(path, 0o644)
    assert KeyStore(tmp_path, None).current.key_id == first.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_file_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    """A master.key symlinked elsewhere (someone else's file) is refused, never followed."""
    (tmp_path / "elsewhere.key").write_text(MasterKey.generate().file_text())
    (tmp_path / "master.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(StorageError, match="symbolic link"):
        KeyStore(tmp_path, None)


def test_secret_is_read_from_the_environment() -> None:
    """`POWERMEM_GATEWAY_SECRET` becomes `Settings.secret`."""
    settings = Settings.from_env({"POWERMEM_GATEWAY_SECRET": "s3cret"})
    assert settings.secret == "s3cret"
    assert Settings.from_env({}).secret is None


async def test_registry_stores_only_ciphertext_naming_its_key(
    make_settings: Callable[..., Settings],
) -> None:
    """The `instances.api_key` column holds a ciphertext made by the registry's master key."""
    registry = await Registry.open(make_settings(secret="one secret"))
    try:
        record, _ = await registry.resolve(
            InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEY)
        )
        assert registry.api_key(record) == KEY
        key_id = registry.keys.current.key_id
    finally:
        await registry.close()
    with sqlite3.connect(make_settings().data_dir / DB_FILE) as db:
        (stored,) = db.execute(
            "SELECT api_key FROM instances WHERE instance_id = ?", (record.instance_id,)
        ).fetchone()
    db.close()
    assert KEY not in stored
    assert stored.split(".")[:2] == ["v2", key_id]


async def test_registry_opened_with_another_secret_cannot_read_keys(
    make_settings: Callable[..., Settings],
) -> None:
    """Reopening the data dir under a different secret says which master key is missing."""
    config = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEY)
    registry = await Registry.open(make_settings(secret="one secret"))
    try:
        record, _ = await registry.resolve(config)
    finally:
        await registry.close()
    registry = await Registry.open(make_settings(secret="another secret"))
    try:
        again, created = await registry.resolve(config)
        assert (again.instance_id, created) == (record.instance_id, False)
        with pytest.raises(StorageError, match="POWERMEM_GATEWAY_SECRET") as caught:
            registry.api_key(again)
        assert caught.value.status == 503
    finally:
        await registry.close()
    registry = await Registry.open(make_settings(secret="one secret"))
    try:
        assert registry.api_key(await registry.get(record.instance_id)) == KEY
    finally:
        await registry.close()


async def test_generated_key_file_keeps_keys_readable_across_restarts(
    make_settings: Callable[..., Settings],
) -> None:
    """Without a secret, a reopened registry reads keys with the generated key file."""
    config = InstanceConfig.parse(provider="deepseek", model="deepseek-chat", api_key=KEY)
    registry = await Registry.open(make_settings())
    try:
        record, _ = await registry.resolve(config)
    finally:
        await registry.close()
    key_file = make_settings().data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    registry = await Registry.open(make_settings())
    try:
        assert registry.api_key(await registry.get(record.instance_id)) == KEY
    finally:
        await registry.close()
