"""The registry: one instance per configuration, updates that keep ids, honest caches."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.errors import ConfigConflict, InvalidConfig, UnknownInstance
from gateway.instances.model import InstanceConfig, candidate_id
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.settings import Settings

KEY_A = "sk-test-registry-aaaaaaaaaaaa"
KEY_B = "sk-test-registry-bbbbbbbbbbbb"
CONFIG_A = InstanceConfig.parse(provider="openai", model="gpt-4o-mini", api_key=KEY_A)
CONFIG_B = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEY_B)


@pytest.fixture
async def second_registry(make_settings: Callable[..., Settings]) -> AsyncIterator[Registry]:
    """Another registry on the same data dir, as a second gateway process would have."""
    opened = await Registry.open(make_settings())
    yield opened
    await opened.close()


async def test_resolve_creates_once_and_finds_after(registry: Registry) -> None:
    """The first resolve of a configuration creates it; later ones find the same record."""
    first, created = await registry.resolve(CONFIG_A)
    again, created_again = await registry.resolve(CONFIG_A)
    assert (created, created_again) == (True, False)
    assert again.instance_id == first.instance_id
    assert first.instance_id == candidate_id(registry.digest(CONFIG_A))
    assert [r.instance_id for r in await registry.list()] == [first.instance_id]


async def test_record_holds_config_masked_key_and_times(registry: Registry) -> None:
    """A created record carries the configuration, a masked key and its timestamps."""
    record, _ = await registry.resolve(CONFIG_A)
    public = record.public()
    assert public["provider"] == "openai" and public["model"] == "gpt-4o-mini"
    assert public["api_key"] == "sk-t…aaaa"
    assert public["source"] == "api" and public["read_only"] is False
    assert public["created_at"] == public["updated_at"]
    assert public["created_at"].endswith("Z")
    assert registry.api_key(record) == KEY_A


async def test_ids_survive_reopen_without_the_change_file(
    make_settings: Callable[..., Settings],
) -> None:
    """With the change file gone, a reopened registry still finds the same id in SQLite."""

    registry = await Registry.open(make_settings())
    record, _ = await registry.resolve(CONFIG_A)
    await registry.close()
    (make_settings().data_dir / "registry.changes").unlink()
    registry = await Registry.open(make_settings())
    try:
        again, created = await registry.resolve(CONFIG_A)
        assert (again.instance_id, created) == (record.instance_id, False)
    finally:
        await registry.close()


async def test_update_keeps_the_id_and_changes_the_config(registry: Registry) -> None:
    """An update rewrites model and key under the same id and moves `updated_at` on."""
    record, _ = await registry.resolve(CONFIG_A)
    updated = await registry.update(record.instance_id, {"model": "gpt-4.1", "api_key": KEY_B})
    assert updated.instance_id == record.instance_id
    fetched = await registry.get(record.instance_id)
    assert (fetched.model, registry.api_key(fetched)) == ("gpt-4.1", KEY_B)
    assert fetched.created_at == record.created_at
    assert fetched.updated_at > record.updated_at


async def test_updated_config_resolves_to_the_kept_id(registry: Registry) -> None:
    """After an update, the new configuration finds the instance instead of creating one."""
    record, _ = await registry.resolve(CONFIG_A)
    await registry.update(record.instance_id, {"model": "gpt-4o", "api_key": KEY_B})
    found, created = await registry.resolve(CONFIG_B)
    assert (found.instance_id, created) == (record.instance_id, False)


async def test_old_config_after_update_gets_the_fallback_candidate(registry: Registry) -> None:
    """Once an update moved a configuration away, that configuration gets candidate 1."""
    record, _ = await registry.resolve(CONFIG_A)
    await registry.update(record.instance_id, {"model": "gpt-4o", "api_key": KEY_B})
    fresh, created = await registry.resolve(CONFIG_A)
    assert created
    assert fresh.instance_id != record.instance_id
    assert fresh.instance_id == candidate_id(registry.digest(CONFIG_A), 1)
    assert registry.api_key(fresh) == KEY_A
    again, created = await registry.resolve(CONFIG_A)
    assert (again.instance_id, created) == (fresh.instance_id, False)


async def test_update_onto_another_instances_config_is_a_conflict(registry: Registry) -> None:
    """An update that would duplicate another instance's configuration raises 409."""
    a, _ = await registry.resolve(CONFIG_A)
    b, _ = await registry.resolve(CONFIG_B)
    with pytest.raises(ConfigConflict) as caught:
        await registry.update(a.instance_id, {"model": "gpt-4o", "api_key": KEY_B})
    assert caught.value.status == 409
    assert b.instance_id in caught.value.message
    assert KEY_B not in caught.value.message
    assert registry.api_key(await registry.get(a.instance_id)) == KEY_A


async def test_update_refuses_unknown_fields_and_invalid_values(registry: Registry) -> None:
    """Unknown fields and invalid values are refused and leave the record as it was."""
    record, _ = await registry.resolve(CONFIG_A)
    with pytest.raises(InvalidConfig, match="colour"):
        await registry.update(record.instance_id, {"colour": "blue"})
    with pytest.raises(InvalidConfig, match="base_url"):
        await registry.update(record.instance_id, {"base_url": "gopher://x"})
    assert await registry.get(record.instance_id) == record


async def test_update_of_unknown_id_is_not_found(registry: Registry) -> None:
    """Updating an id nobody registered raises `UnknownInstance`."""
    with pytest.raises(UnknownInstance):
        await registry.update("pmem-0000000000000000", {"model": "x"})


async def test_delete_removes_and_a_second_delete_is_not_found(registry: Registry) -> None:
    """A deleted instance is gone for get, list and delete alike."""
    record, _ = await registry.resolve(CONFIG_A)
    await registry.delete(record.instance_id)
    with pytest.raises(UnknownInstance):
        await registry.get(record.instance_id)
    with pytest.raises(UnknownInstance):
        await registry.delete(record.instance_id)
    assert await registry.list() == []


async def test_config_of_a_deleted_instance_recreates_the_same_id(registry: Registry) -> None:
    """Registering a deleted configuration again creates it anew under its derived id."""
    record, _ = await registry.resolve(CONFIG_A)
    await registry.delete(record.instance_id)
    again, created = await registry.resolve(CONFIG_A)
    assert created and again.instance_id == record.instance_id
    assert (await registry.get(record.instance_id)).instance_id == record.instance_id


async def test_other_process_sees_a_delete_at_once(
    registry: Registry, second_registry: Registry
) -> None:
    """A delete in one registry is seen by another on the same data dir with no delay."""
    record, _ = await registry.resolve(CONFIG_A)
    assert (await second_registry.get(record.instance_id)).instance_id == record.instance_id
    await registry.delete(record.instance_id)
    with pytest.raises(UnknownInstance):
        await second_registry.get(record.instance_id)


async def test_other_process_sees_an_update_at_once(
    registry: Registry, second_registry: Registry
) -> None:
    """An update in one registry is what another on the same data dir reads next."""
    record, _ = await registry.resolve(CONFIG_A)
    assert (await second_registry.get(record.instance_id)).model == "gpt-4o-mini"
    await registry.update(record.instance_id, {"model": "gpt-4.1"})
    assert (await second_registry.get(record.instance_id)).model == "gpt-4.1"
    assert (await second_registry.resolve(CONFIG_A))[0].instance_id != record.instance_id


async def test_two_registries_on_one_data_dir_create_one_instance(
    registry: Registry, second_registry: Registry
) -> None:
    """Concurrent first resolves in two registries on one data dir give one instance."""
    results = await asyncio.gather(
        *(r.resolve(CONFIG_A) for _ in range(10) for r in (registry, second_registry))
    )
    assert len({record.instance_id for record, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(await registry.list()) == 1


async def test_usage_counters_add_up_and_persist(make_settings: Callable[..., Settings]) -> None:
    """Counted requests are flushed to SQLite and survive a reopen."""
    registry = await Registry.open(make_settings())
    record, _ = await registry.resolve(CONFIG_A)
    assert (await registry.usage(record.instance_id))["requests"] == 0
    registry.count(record.instance_id, requests=1)
    registry.count(record.instance_id, requests=1, errors=1)
    await registry.close()
    registry = await Registry.open(make_settings())
    try:
        usage = await registry.usage(record.instance_id)
    finally:
        await registry.close()
    assert (usage["requests"], usage["errors"]) == (2, 1)
    assert usage["last_used_at"] >= record.created_at


async def test_sqlite_schema_keeps_one_row_per_configuration(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """The database itself refuses a second row with the same configuration digest."""
    await registry.resolve(CONFIG_A)
    db = sqlite3.connect(make_settings().data_dir / DB_FILE)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                "INSERT INTO instances SELECT 'pmem-dup', client, provider, model, api_key, "
                "masked_key, base_url, config_digest, created_at, updated_at, source, secret_hash "
                "FROM instances"
            )
    finally:
        db.close()
