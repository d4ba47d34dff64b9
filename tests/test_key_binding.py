"""A stored key only ever goes where it was registered (issue 9.1), however the row is changed.

The attacker here can write the data dir but has no master key (it comes from
POWERMEM_GATEWAY_SECRET), or can call the management API: each attack ends with the attacker's
own provider having received nothing, and the instance refused or unchanged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.errors import InvalidConfig, StorageError, StoredKeyRejected
from gateway.http.app import create_app
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.observe.audit import AUDIT_FILE
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import OperatorFactory
from tests.fakes.providers import FakeOpenAI

Client = TestClient[web.Request, web.Application]
SECRET = "master secret the attacker does not have"
RELAY_TOKEN = "pgr-test-key-binding-0123456789"
KEY = "sk-victim-key-0123456789abcdefgh"
NEW_KEY = "sk-victim-new-key-fedcba987654321"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
async def victim() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def attacker() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(secret=SECRET, relay_token=RELAY_TOKEN)


def edit_row(settings: Settings, instance_id: str, **columns: str) -> None:
    """What a data-dir writer does: change a row with the sqlite3 shell, nothing else."""
    db = sqlite3.connect(settings.data_dir / DB_FILE)
    with db:
        for name, value in columns.items():
            db.execute(
                f"UPDATE instances SET {name} = ? WHERE instance_id = ?",  # noqa: S608
                (value, instance_id),
            )
    db.close()


def audit_actions(settings: Settings) -> list[str]:
    lines = (settings.data_dir / AUDIT_FILE).read_text().splitlines()
    return [json.loads(line)["action"] for line in lines]


async def relay(client: Client, instance_id: str) -> Any:
    headers = {
        "Authorization": f"Bearer {RELAY_TOKEN}",
        "baggage": in_flight(client.server.app, instance_id),
    }
    response = await client.post("/relay/v1/chat/completions", json=CHAT, headers=headers)
    return response.status, await response.json()


async def register(client: Client, base_url: str) -> str:
    body = {"provider": "openai", "model": "gpt-4o", "api_key": KEY, "base_url": base_url}
    response = await client.post("/api/v1/instances", json=body)
    assert response.status == 201
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


@pytest.mark.parametrize(
    "edit",
    [
        {"base_url": "ATTACKER"},
        {"provider": "deepseek", "base_url": "ATTACKER"},
        {"base_url": "ATTACKER/"},
    ],
)
async def test_a_row_edited_on_disk_never_sends_its_key_anywhere(
    operator: OperatorFactory,
    settings: Settings,
    victim: FakeOpenAI,
    attacker: FakeOpenAI,
    edit: dict[str, str],
) -> None:
    """After a base_url/provider edit in the SQLite file the instance is refused, audited once."""
    first: Client = await operator(create_app(settings))
    instance_id = await register(first, victim.url)
    assert (await relay(first, instance_id))[0] == 200
    assert victim.calls[-1]["authorization"] == f"Bearer {KEY}"
    await first.close()

    edit_row(
        settings, instance_id, **{k: v.replace("ATTACKER", attacker.url) for k, v in edit.items()}
    )
    second: Client = await operator(create_app(settings))  # a gateway started after
    for _ in range(3):
        status, body = await relay(second, instance_id)
        assert status == 409
        assert "changed outside the gateway" in body["error"]["message"]
        assert KEY not in json.dumps(body)
    assert attacker.calls == []
    assert len(victim.calls) == 1
    assert audit_actions(settings).count("key_rejected") == 1
    shown = await second.get(f"/api/v1/instances/{instance_id}")
    assert shown.status == 200 and KEY not in await shown.text()


async def test_a_ciphertext_copied_from_another_row_does_not_open(
    registry: Registry, settings: Settings
) -> None:
    """Moving instance A's ciphertext onto instance B's row gives B no key at all."""
    a, _ = await registry.resolve(InstanceConfig.parse(provider="openai", model="a", api_key=KEY))
    b, _ = await registry.resolve(
        InstanceConfig.parse(provider="openai", model="b", api_key=NEW_KEY)
    )
    edit_row(settings, b.instance_id, api_key=a.encrypted_key)
    fresh = await Registry.open(settings)
    try:
        with pytest.raises(StoredKeyRejected):
            fresh.api_key(await fresh.get(b.instance_id))
        assert fresh.api_key(await fresh.get(a.instance_id)) == KEY
    finally:
        await fresh.close()


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "ATTACKER"},
        {"provider": "deepseek"},
        {"provider": "anthropic", "model": "claude-x"},
        {"base_url": ""},
    ],
)
async def test_moving_an_instance_needs_its_key_in_the_same_request(
    operator: OperatorFactory,
    settings: Settings,
    victim: FakeOpenAI,
    attacker: FakeOpenAI,
    change: dict[str, str],
) -> None:
    """A PUT of provider or base_url without api_key is a 400 that changes nothing."""
    client: Client = await operator(create_app(settings))
    instance_id = await register(client, victim.url)
    body = {k: v.replace("ATTACKER", attacker.url) for k, v in change.items()}
    response = await client.put(f"/api/v1/instances/{instance_id}", json=body)
    answer = await response.json()
    assert response.status == 400
    assert (
        "api_key" in answer["error"]["message"]
        and "Nothing was changed" in answer["error"]["message"]
    )
    assert (await relay(client, instance_id))[0] == 200
    assert victim.calls[-1]["authorization"] == f"Bearer {KEY}"
    assert attacker.calls == []
    assert "update" not in audit_actions(settings)


async def test_an_unchanged_base_url_spelt_differently_needs_no_key(
    operator: OperatorFactory, settings: Settings, victim: FakeOpenAI
) -> None:
    """Sending the same base URL again (trailing slash) with a new model is not a move."""
    client: Client = await operator(create_app(settings))
    instance_id = await register(client, victim.url)
    body = {"base_url": victim.url + "/", "provider": "openai", "model": "gpt-4.1"}
    response = await client.put(f"/api/v1/instances/{instance_id}", json=body)
    assert response.status == 200
    assert (await relay(client, instance_id))[0] == 200
    assert victim.calls[-1]["json"]["model"] == "gpt-4.1"


async def test_a_move_with_its_key_sends_only_that_key_to_the_new_place(
    operator: OperatorFactory, settings: Settings, victim: FakeOpenAI, attacker: FakeOpenAI
) -> None:
    """With api_key in the PUT the instance moves, and the new place gets only the new key."""
    client: Client = await operator(create_app(settings))
    instance_id = await register(client, victim.url)
    body = {"base_url": attacker.url, "api_key": NEW_KEY}
    assert (await client.put(f"/api/v1/instances/{instance_id}", json=body)).status == 200
    assert (await relay(client, instance_id))[0] == 200
    assert [c["authorization"] for c in attacker.calls] == [f"Bearer {NEW_KEY}"]
    assert victim.calls == []


async def test_a_key_rotation_keeps_the_binding(
    registry: Registry, settings: Settings, attacker: FakeOpenAI
) -> None:
    """After `secret rotate` an edited row is refused again, and rotating it fails clearly."""
    config = InstanceConfig.parse(provider="openai", model="m", api_key=KEY)
    record, _ = await registry.resolve(config)
    previous = Settings(**{**settings.__dict__, "previous_secrets": (SECRET,), "secret": "new"})
    rotating = await Registry.open(previous)
    try:
        report = await rotating.rotate_master_key()
        assert report.reencrypted == 1
        rotated = await rotating.get(record.instance_id)
        assert rotated.encrypted_key.startswith(f"v2.{report.key_id}.")
        assert rotating.api_key(rotated) == KEY
        edit_row(settings, record.instance_id, base_url=attacker.url)
        reopened = await Registry.open(previous)
        try:
            with pytest.raises(StoredKeyRejected):
                reopened.api_key(await reopened.get(record.instance_id))
        finally:
            await reopened.close()
        again = Settings(**{**settings.__dict__, "previous_secrets": ("new",), "secret": "newer"})
        rotating_again = await Registry.open(again)
        try:
            with pytest.raises(StorageError, match="tampered"):
                await rotating_again.rotate_master_key()
        finally:
            await rotating_again.close()
    finally:
        await rotating.close()


async def test_update_refused_before_anything_is_decrypted_or_written(registry: Registry) -> None:
    """The registry-level rule: no new provider or base_url without api_key; nothing changed."""
    record, _ = await registry.resolve(
        InstanceConfig.parse(provider="openai", model="m", api_key=KEY)
    )
    with pytest.raises(InvalidConfig) as caught:
        await registry.update(record.instance_id, {"base_url": "https://elsewhere.example/v1"})
    assert caught.value.status == 400 and caught.value.details == {"field": "api_key"}
    assert await registry.get(record.instance_id) == record
