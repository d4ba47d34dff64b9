"""Revocation: after PUT or DELETE, no gateway process on the data dir serves the old config."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import astuple
from pathlib import Path

import aiohttp
import diskcache
import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import UnknownInstance
from gateway.instances.cache import RecordCache
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.store import Store
from gateway.settings import Settings
from tests.conftest import SpawnWorkers
from tests.fakes.providers import FakeOpenAI

RELAY_TOKEN = "pgr-test-revocation-token-0123456789"
KEYS = [f"sk-test-revocation-{n:04d}-abcdefghijkl" for n in range(8)]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
CONFIG = InstanceConfig.parse(provider="openai", model="gpt-4o-mini", api_key=KEYS[0])


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


async def test_put_and_delete_through_one_process_apply_at_once_in_another(
    spawn_workers: SpawnWorkers,
    upstream: TestServer,
    provider: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Register via A, relay via B; each PUT via A is what B's very next call uses; DELETE too."""
    monkeypatch.setenv("POWERMEM_GATEWAY_RELAY_TOKEN", RELAY_TOKEN)
    data_dir = tmp_path / "shared-data"
    upstream_url = str(upstream.make_url("")).rstrip("/")
    a, b = spawn_workers(2, upstream=upstream_url, data_dir=data_dir)
    await a.wait_healthy()
    await b.wait_healthy()
    async with aiohttp.ClientSession() as session:
        body = {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_key": KEYS[0],
            "base_url": provider.url,
        }
        async with session.post(a.url + "/api/v1/instances", json=body) as response:
            assert response.status == 201
            instance_id = (await response.json())["data"]["instance_id"]
        relay = {
            "Authorization": f"Bearer {RELAY_TOKEN}",
            "baggage": f"powermem.instance={instance_id}",
        }

        async def call_b() -> int:
            async with session.post(
                b.url + "/relay/v1/chat/completions", json=CHAT, headers=relay
            ) as answer:
                await answer.read()
                return answer.status

        for _ in range(3):  # B has it cached now
            assert await call_b() == 200
        assert provider.calls[-1]["authorization"] == f"Bearer {KEYS[0]}"
        for n in range(1, len(KEYS)):
            put = {"api_key": KEYS[n], "model": f"model-{n}"}
            async with session.put(f"{a.url}/api/v1/instances/{instance_id}", json=put) as r:
                assert r.status == 200
            assert await call_b() == 200
            assert provider.calls[-1]["authorization"] == f"Bearer {KEYS[n]}"
            assert provider.calls[-1]["json"]["model"] == f"model-{n}"
        async with session.delete(f"{a.url}/api/v1/instances/{instance_id}") as response:
            assert response.status == 200
        calls = len(provider.calls)
        assert await call_b() == 404
        async with session.get(
            b.url + "/api/v1/memories", headers={"X-PowerMem-Instance": instance_id}
        ) as response:
            assert response.status == 404
        assert len(provider.calls) == calls


async def test_a_slow_reader_never_writes_an_old_row_back(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """A row read before an update, filled into the cache after it, is refused."""
    record, _ = await registry.resolve(CONFIG)
    settings = make_settings()
    # Another process's miss path, step by step: epoch, then SQLite, then (late) the fill.
    reader_cache = RecordCache(settings.data_dir / "cache")
    reader_store = Store(settings.data_dir)
    try:
        epoch = reader_cache.epoch()
        old_row = reader_store.get(record.instance_id)
        assert old_row is not None
        await registry.update(record.instance_id, {"api_key": KEYS[1]})
        # Even with the fresh entry gone (expired or evicted), the late fill must not land.
        raw = diskcache.Cache(str(settings.data_dir / "cache"))
        raw.delete(("id", record.instance_id))
        raw.close()
        stale = astuple(record)
        landed = reader_cache.fill({("id", record.instance_id): stale}, epoch, expire=300)
    finally:
        reader_cache.close()
        reader_store.close()
    assert not landed
    assert registry.api_key(await registry.get(record.instance_id)) == KEYS[1]


async def test_a_writer_killed_after_its_commit_leaves_no_stale_entry(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """Between a commit and its cache refresh, readers go to SQLite and fill nothing."""
    record, _ = await registry.resolve(CONFIG)
    settings = make_settings()
    cache = RecordCache(settings.data_dir / "cache")
    store = Store(settings.data_dir)
    try:
        epoch = cache.epoch()
        old = store.get(record.instance_id)
        assert old is not None
        # A writer that marks, commits, and dies before refreshing the cache:
        cache.begin([("id", record.instance_id)])
        store.delete(record.instance_id)
        landed = cache.fill({("id", record.instance_id): astuple(record)}, epoch, expire=300)
    finally:
        cache.close()
        store.close()
    assert not landed
    with pytest.raises(UnknownInstance):
        await registry.get(record.instance_id)


async def test_concurrent_readers_see_each_update_as_soon_as_it_returns(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """Readers hammering another registry never see a model older than the last acked update."""
    record, _ = await registry.resolve(CONFIG)
    other = await Registry.open(make_settings())
    acked = 0
    stale: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            floor = acked
            got = await other.get(record.instance_id)
            version = int(got.model.rsplit("-", 1)[1]) if got.model.startswith("v-") else 0
            if version < floor:
                stale.append((version, floor))
            await asyncio.sleep(0)

    readers = [asyncio.create_task(read()) for _ in range(8)]
    try:
        for n in range(1, 40):
            await registry.update(record.instance_id, {"model": f"v-{n}"})
            acked = n
            await asyncio.sleep(0.001)
    finally:
        done.set()
        await asyncio.gather(*readers)
        await other.close()
    assert stale == []
    assert (await registry.get(record.instance_id)).model == "v-39"


async def test_a_failed_update_leaves_the_cache_serving_the_current_record(
    registry: Registry,
) -> None:
    """An update refused by the store (409) drops its markers; the old record stays served."""
    a, _ = await registry.resolve(CONFIG)
    other = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEYS[2])
    await registry.resolve(other)
    with pytest.raises(Exception, match="already registered"):
        await registry.update(a.instance_id, {"model": "gpt-4o", "api_key": KEYS[2]})
    assert registry.api_key(await registry.get(a.instance_id)) == KEYS[0]
    assert (await registry.resolve(CONFIG))[0].instance_id == a.instance_id
