"""The change file and the data dir's files under a careless operator (issues 12.3 and 12.6).

`registry.changes` is what keeps every process's cache honest. Deleted, damaged, truncated or
unusable, it never stops a gateway and never lets one serve a stale record: lookups go to the
database until the file is usable again. Files with loose modes are fixed at start, files
that are not the gateway's own are refused.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import StorageError, UnknownInstance
from gateway.instances.changes import CHANGES_FILE, SIZE
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.settings import Settings
from tests.conftest import SpawnGateway

KEY = "sk-test-changes-0123456789abcdef"
CONFIG = InstanceConfig.parse(provider="openai", model="v-0", api_key=KEY)


@pytest.fixture
async def two(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Registry, Registry]]:
    """Two registries on one data dir, as two gateway processes have."""
    a = await Registry.open(make_settings())
    b = await Registry.open(make_settings())
    yield a, b
    await a.close()
    await b.close()


async def assert_b_follows_a(a: Registry, b: Registry, instance_id: str, rounds: int = 3) -> None:
    """Each update through A is what B reads next (first from the store, then cached)."""
    for n in range(rounds):
        model = f"v-{os.urandom(3).hex()}-{n}"
        await a.update(instance_id, {"model": model})
        assert (await b.get(instance_id)).model == model
        assert (await b.get(instance_id)).model == model


async def test_a_deleted_change_file_never_serves_stale(
    two: tuple[Registry, Registry], make_settings: Callable[..., Settings]
) -> None:
    """Deleted under two running processes: updates still reach the other at once."""
    a, b = two
    record, _ = await a.resolve(CONFIG)
    await b.get(record.instance_id)  # cached in B
    (make_settings().data_dir / CHANGES_FILE).unlink()
    await assert_b_follows_a(a, b, record.instance_id)
    assert (make_settings().data_dir / CHANGES_FILE).stat().st_size == SIZE
    assert len(b.store.cache) > 0  # B found the new file and caches again


async def test_a_replacement_file_is_never_mistaken_for_the_old_one(
    two: tuple[Registry, Registry], make_settings: Callable[..., Settings]
) -> None:
    """A process that switches to a new change file without noticing the old one's deletion
    still drops what it cached: a fresh file's counter starts where no old one could be."""
    a, b = two
    record, _ = await a.resolve(CONFIG)  # two changes announced: the id and the digest
    await b.get(record.instance_id)
    (make_settings().data_dir / CHANGES_FILE).unlink()
    c = await Registry.open(make_settings())  # makes a new file
    try:
        await c.delete(record.instance_id)  # two changes announced in the new file
        await b.housekeeping()  # B's worker finds the new file before B's lookups notice
        with pytest.raises(UnknownInstance):
            await b.get(record.instance_id)
    finally:
        await c.close()


@pytest.mark.parametrize("damage", [b"", b"garbage" * 10, b"\0" * SIZE])
async def test_a_damaged_change_file_is_replaced_at_start(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, damage: bytes
) -> None:
    """Empty, foreign or zeroed: the next start replaces it and serves as usual."""
    settings = make_settings()
    registry = await Registry.open(settings)
    record, _ = await registry.resolve(CONFIG)
    await registry.close()
    (settings.data_dir / CHANGES_FILE).write_bytes(damage)
    registry = await Registry.open(settings)
    try:
        assert registry.api_key(await registry.get(record.instance_id)) == KEY
        assert (settings.data_dir / CHANGES_FILE).stat().st_size == SIZE
        assert "damaged" in caplog.text
    finally:
        await registry.close()


async def test_a_change_file_truncated_while_running_crashes_nothing(
    two: tuple[Registry, Registry], make_settings: Callable[..., Settings]
) -> None:
    """Truncated under running processes (no SIGBUS: it is read, not mapped), all stays fresh."""
    a, b = two
    record, _ = await a.resolve(CONFIG)
    await b.get(record.instance_id)
    os.truncate(make_settings().data_dir / CHANGES_FILE, 0)
    assert (await b.get(record.instance_id)).model == "v-0"
    await assert_b_follows_a(a, b, record.instance_id)


async def test_without_a_usable_change_file_answers_come_from_the_database(
    two: tuple[Registry, Registry],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A directory where the file belongs: one warning, nothing cached, nothing stale, and
    caching comes back once the path is free again."""
    settings = make_settings()
    a, b = two
    record, _ = await a.resolve(CONFIG)
    path = settings.data_dir / CHANGES_FILE
    path.unlink()
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="gateway.registry"):
        c = await Registry.open(settings)
        try:
            await assert_b_follows_a(a, c, record.instance_id)
            await assert_b_follows_a(c, b, record.instance_id)
            assert len(c.store.cache) == 0
            warnings = [r for r in caplog.records if "cannot be used" in r.getMessage()]
            assert len(warnings) <= 3  # once per process (a, b, c), however many lookups
            path.rmdir()
            await c.housekeeping()
            await assert_b_follows_a(a, c, record.instance_id)
            assert len(c.store.cache) > 0
            assert "usable again" in caplog.text
        finally:
            await c.close()


async def test_a_gateway_starts_and_serves_with_an_unusable_change_file(
    spawn_gateway: SpawnGateway, upstream: TestServer, make_settings: Callable[..., Settings]
) -> None:
    """A real `serve` on such a data dir comes up, registers and binds, with one warning."""
    settings = make_settings()
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / CHANGES_FILE).mkdir()
    # One worker: each process warns once, and the count below is per process.
    gateway = spawn_gateway(
        upstream=str(upstream.make_url("")).rstrip("/"),
        data_dir=settings.data_dir,
        extra=("--workers", "1"),
    )
    await gateway.wait_healthy()
    async with aiohttp.ClientSession() as session:
        body = {"provider": "openai", "model": "m", "api_key": KEY}
        async with session.post(gateway.url + "/api/v1/instances", json=body) as response:
            assert response.status == 201
            instance_id = (await response.json())["data"]["instance_id"]
        headers = {"X-PowerMem-Instance": instance_id}
        async with session.get(gateway.url + "/api/v1/memories", headers=headers) as response:
            assert response.status == 200
    assert gateway.output().count("cannot be used") == 1


async def test_loose_modes_are_fixed_at_start(make_settings: Callable[..., Settings]) -> None:
    """Registry, key and change files left readable by others are 0600 again after a start."""
    settings = make_settings()
    registry = await Registry.open(settings)
    await registry.resolve(CONFIG)
    await registry.close()
    names = (DB_FILE, "master.key", CHANGES_FILE)
    for name in names:
        os.chmod(settings.data_dir / name, 0o644)
    os.chmod(settings.data_dir, 0o755)  # noqa: S103 - the careless operator's chmod
    registry = await Registry.open(settings)
    await registry.close()
    for name in names:
        assert stat.S_IMODE((settings.data_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
@pytest.mark.parametrize("name", [DB_FILE, "master.key", CHANGES_FILE])
async def test_a_file_owned_by_another_user_is_refused(
    make_settings: Callable[..., Settings], name: str
) -> None:
    """Whoever owns a file can change what it says: one that is not ours stops the start."""
    settings = make_settings()
    registry = await Registry.open(settings)
    await registry.close()
    os.chown(settings.data_dir / name, 65534, 65534)
    with pytest.raises(StorageError, match="not to the gateway's user") as caught:
        await Registry.open(settings)
    assert name in caught.value.message


async def test_a_symlinked_registry_file_is_refused(
    make_settings: Callable[..., Settings], tmp_path: os.PathLike[str]
) -> None:
    """A registry file that is a link to somewhere else is not followed."""
    settings = make_settings()
    settings.data_dir.mkdir(parents=True)
    elsewhere = settings.data_dir.parent / "elsewhere.sqlite3"
    elsewhere.write_bytes(b"")
    (settings.data_dir / DB_FILE).symlink_to(elsewhere)
    with pytest.raises(StorageError, match="symbolic link"):
        await Registry.open(settings)
