"""`powermem-gateway secret rotate`: every stored key moves to a new master key, crash-safely."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.errors import StorageError
from gateway.instances.crypto import MASTER_KEY_FILE, key_id_of
from gateway.instances.keystore import NEXT_KEY_FILE
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE, SqliteStore
from gateway.settings import Settings
from tests.conftest import REPO_ROOT


def key_of(n: int) -> str:
    return f"sk-test-rotation-{n:06d}-abcdefghij"


def config(n: int) -> InstanceConfig:
    return InstanceConfig.parse(provider="openai", model=f"model-{n}", api_key=key_of(n))


async def register(settings: Settings, count: int) -> dict[str, int]:
    registry = await Registry.open(settings)
    try:
        ids = {}
        for n in range(count):
            record, _ = await registry.resolve(config(n))
            ids[record.instance_id] = n
        return ids
    finally:
        await registry.close()


def stored_key_ids(settings: Settings) -> set[str]:
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    try:
        return {key_id_of(k) for (k,) in db.execute("SELECT api_key FROM instances")}
    finally:
        db.close()


def key_files(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.data_dir.glob("master*"))


async def assert_all_readable(settings: Settings, ids: dict[str, int]) -> None:
    """A freshly opened registry (a gateway started now) decrypts every stored key."""
    registry = await Registry.open(settings)
    try:
        for instance_id, n in ids.items():
            assert registry.api_key(await registry.get(instance_id)) == key_of(n)
    finally:
        await registry.close()


def rotate_cli_sync(settings: Settings) -> str:
    result = CliRunner().invoke(
        cli, ["secret", "rotate", "--data-dir", str(settings.data_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


async def rotate_cli(settings: Settings) -> str:
    """`powermem-gateway secret rotate`, run in a thread (it has an event loop of its own)."""
    return await asyncio.to_thread(rotate_cli_sync, settings)


async def test_rotation_reencrypts_every_key_and_retires_the_old_master_key(
    make_settings: Callable[..., Settings],
) -> None:
    """After a rotation every row names the new key, master.key is new, the old one is gone."""
    settings = make_settings()
    ids = await register(settings, 5)
    old_text = (settings.data_dir / MASTER_KEY_FILE).read_text()
    (old_id,) = stored_key_ids(settings)
    output = await rotate_cli(settings)
    (new_id,) = stored_key_ids(settings)
    assert new_id != old_id
    assert f"Rotated to master key {new_id}: 5 stored key(s) re-encrypted" in output
    assert old_id in output  # retired
    assert key_files(settings) == [MASTER_KEY_FILE]
    assert (settings.data_dir / MASTER_KEY_FILE).read_text() != old_text
    assert (settings.data_dir / MASTER_KEY_FILE).stat().st_mode & 0o777 == 0o600
    await assert_all_readable(settings, ids)


async def test_running_gateway_keeps_reading_and_writes_under_the_new_key(
    make_settings: Callable[..., Settings],
) -> None:
    """A registry opened before the rotation reads rotated keys and encrypts under the new key."""
    settings = make_settings()
    ids = await register(settings, 3)
    running = await Registry.open(settings)
    try:
        for instance_id in ids:  # warm the shared cache with old ciphertexts
            await running.get(instance_id)
        await rotate_cli(settings)
        (new_id,) = stored_key_ids(settings)
        for instance_id, n in ids.items():
            record = await running.get(instance_id)
            assert key_id_of(record.encrypted_key) == new_id  # the cache was refreshed
            assert running.api_key(record) == key_of(n)
        fresh, created = await running.resolve(config(99))
        assert created and key_id_of(fresh.encrypted_key) == new_id
        updated = await running.update(next(iter(ids)), {"api_key": "sk-after-rotation-123456"})
        assert key_id_of(updated.encrypted_key) == new_id
    finally:
        await running.close()
    assert stored_key_ids(settings) == {new_id}


async def test_rotation_twice_in_a_row_is_two_rotations(
    make_settings: Callable[..., Settings],
) -> None:
    """A finished rotation leaves nothing pending; the next run rotates again."""
    settings = make_settings()
    ids = await register(settings, 2)
    await rotate_cli(settings)
    (first,) = stored_key_ids(settings)
    await rotate_cli(settings)
    (second,) = stored_key_ids(settings)
    assert first != second
    assert key_files(settings) == [MASTER_KEY_FILE]
    await assert_all_readable(settings, ids)


async def test_rotation_killed_at_any_point_is_finished_by_a_rerun(
    make_settings: Callable[..., Settings],
) -> None:
    """`kill -9` during a rotation: everything stays readable, and a rerun completes it."""
    settings = make_settings()
    ids = await register(settings, 1500)
    (original,) = stored_key_ids(settings)
    command = [
        sys.executable,
        "-m",
        "gateway",
        "secret",
        "rotate",
        "--data-dir",
        str(settings.data_dir),
        "--instances-file",
        str(settings.instances_file),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERMEM_")}
    killed_mid_way = 0
    # Kills at several moments; on a loaded machine a few land outside the rotation, so
    # keep going (bounded) until one has landed in the middle of one.
    for n, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2, 0.01, 0.03, 0.005, 0.08, 0.15)):
        if n >= 5 and killed_mid_way:
            break
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while not (settings.data_dir / NEXT_KEY_FILE).exists() and proc.returncode is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.002)
        await asyncio.sleep(delay)
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 20)
        if len(stored_key_ids(settings)) > 1:
            killed_mid_way += 1
        await assert_all_readable(settings, ids)
        await rotate_cli(settings)  # the rerun (it may also be a fresh rotation)
        assert key_files(settings) == [MASTER_KEY_FILE]
        assert len(stored_key_ids(settings)) == 1
        await assert_all_readable(settings, ids)
    assert stored_key_ids(settings) != {original}
    assert killed_mid_way >= 1, "no kill landed in the middle of a rotation; make it longer"


async def test_secret_mode_rotates_from_the_previous_secret(
    make_settings: Callable[..., Settings],
) -> None:
    """With a new secret and the old one as previous, rotation moves every key to the new."""
    ids = await register(make_settings(secret="old secret"), 3)
    # Without the previous secret nothing can be read, and nothing changes.
    with pytest.raises(StorageError, match="POWERMEM_GATEWAY_PREVIOUS_SECRET"):
        registry = await Registry.open(make_settings(secret="new secret"))
        try:
            await registry.rotate_master_key()
        finally:
            await registry.close()
    both = make_settings(secret="new secret", previous_secrets=("old secret",))
    registry = await Registry.open(both)
    try:
        report = await registry.rotate_master_key()
    finally:
        await registry.close()
    assert report.reencrypted == 3
    assert stored_key_ids(both) == {report.key_id}
    await assert_all_readable(make_settings(secret="new secret"), ids)
    assert not (make_settings().data_dir / MASTER_KEY_FILE).exists()


async def test_gateway_without_the_new_secret_refuses_to_write_after_rotation(
    make_settings: Callable[..., Settings],
) -> None:
    """A process still on the old secret gets a clear 503 instead of writing old ciphertexts."""
    await register(make_settings(secret="old secret"), 1)
    stale = await Registry.open(make_settings(secret="old secret"))
    try:
        both = make_settings(secret="new secret", previous_secrets=("old secret",))
        registry = await Registry.open(both)
        try:
            await registry.rotate_master_key()
        finally:
            await registry.close()
        with pytest.raises(StorageError, match="secret rotate") as caught:
            await stale.resolve(config(7))
        assert caught.value.status == 503
    finally:
        await stale.close()


def test_secret_rotate_with_nothing_to_do_explains_how_to_change_the_secret(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`secret rotate` under POWERMEM_GATEWAY_SECRET alone says how a secret is rotated."""
    monkeypatch.setenv("POWERMEM_GATEWAY_SECRET", "only secret")
    output = rotate_cli_sync(make_settings())
    assert "POWERMEM_GATEWAY_PREVIOUS_SECRET" in output
    assert "only secret" not in output


async def test_keys_of_the_new_master_key_never_appear_in_the_store(
    make_settings: Callable[..., Settings],
) -> None:
    """The database holds ciphertexts only, before and after a rotation."""
    settings = make_settings()
    await register(settings, 3)
    await rotate_cli(settings)
    store = SqliteStore(settings.data_dir)
    try:
        texts = [c.api_key for c in store.ciphertexts()]
    finally:
        store.close()
    assert not any(key_of(n) in t for n in range(3) for t in texts)
