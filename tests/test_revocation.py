"""Revocation: after PUT or DELETE, no gateway process on the data dir serves the old config."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import UnknownInstance
from gateway.instances.cache import MISS, RecordCache
from gateway.instances.cached_store import to_record
from gateway.instances.changes import ChangeLog
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import SqliteStore
from gateway.settings import Settings
from tests.conftest import REPO_ROOT, SpawnWorkers
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
    """Register via A, call the LLM via B; each PUT via A is what B's very next call uses;
    DELETE too."""
    monkeypatch.setenv("POWERMEM_GATEWAY_RELAY_TOKEN", RELAY_TOKEN)
    data_dir = tmp_path / "shared-data"
    upstream_url = str(upstream.make_url("")).rstrip("/")
    a, b = spawn_workers(2, upstream=upstream_url, data_dir=data_dir)
    await a.wait_healthy()
    await b.wait_healthy()
    # Both processes made or found one admin token in their shared data dir.
    admin = {"Authorization": f"Bearer {(data_dir / 'admin.token').read_text().strip()}"}
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
        bound = {"X-PowerMem-Instance": instance_id, "X-Relay-Token": RELAY_TOKEN}

        async def call_b() -> int:
            """A request through B whose upstream calls B's relay, as powermem would."""
            async with session.post(b.url + "/call-llm", json=CHAT, headers=bound) as answer:
                if answer.status != 200:
                    return answer.status
                relayed: int = (await answer.json())["relay_status"]
                return relayed

        for _ in range(3):  # B has it cached now
            assert await call_b() == 200
        assert provider.calls[-1]["authorization"] == f"Bearer {KEYS[0]}"
        for n in range(1, len(KEYS)):
            put = {"api_key": KEYS[n], "model": f"model-{n}"}
            async with session.put(
                f"{a.url}/api/v1/instances/{instance_id}", json=put, headers=admin
            ) as r:
                assert r.status == 200
            assert await call_b() == 200
            assert provider.calls[-1]["authorization"] == f"Bearer {KEYS[n]}"
            assert provider.calls[-1]["json"]["model"] == f"model-{n}"
        async with session.delete(
            f"{a.url}/api/v1/instances/{instance_id}", headers=admin
        ) as response:
            assert response.status == 200
        calls = len(provider.calls)
        assert await call_b() == 404
        async with session.get(
            b.url + "/api/v1/memories", headers={"X-PowerMem-Instance": instance_id}
        ) as response:
            assert response.status == 404
        assert len(provider.calls) == calls


class OtherProcess:
    """Another gateway process's view of the data dir: its own store, change file and cache."""

    def __init__(self, settings: Settings) -> None:
        self.store = SqliteStore(settings.data_dir)
        self.changes = ChangeLog(settings.data_dir)
        self.cache = RecordCache(self.changes)

    def close(self) -> None:
        self.store.close()
        self.changes.close()


async def test_a_slow_reader_never_writes_an_old_row_back(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """A row read before an update, filled into a cache after it, is refused."""
    record, _ = await registry.resolve(CONFIG)
    other = OtherProcess(make_settings())
    try:
        # The other process's miss path, step by step: lock, counter and row, then (late) fill.
        with other.changes.shared() as at:
            old_row = other.store.get(record.instance_id)
        assert old_row is not None
        await registry.update(record.instance_id, {"api_key": KEYS[1]})
        landed = other.cache.fill(at, {record.instance_id: to_record(old_row)})
        assert not landed
        assert other.cache.record(record.instance_id) is MISS
    finally:
        other.close()
    assert registry.api_key(await registry.get(record.instance_id)) == KEYS[1]


async def test_an_update_waits_for_a_reader_in_the_middle_of_its_miss(
    registry: Registry, make_settings: Callable[..., Settings]
) -> None:
    """While a miss is being read the update waits, and the row it filled is dropped after."""
    record, _ = await registry.resolve(CONFIG)
    other = OtherProcess(make_settings())
    try:
        with other.changes.shared() as at:
            old_row = other.store.get(record.instance_id)
            update = asyncio.create_task(registry.update(record.instance_id, {"api_key": KEYS[2]}))
            await asyncio.sleep(0.2)
            assert not update.done()  # blocked on the reader's shared lock
            assert old_row is not None
            assert other.cache.fill(at, {record.instance_id: to_record(old_row)})
        await update
        assert other.cache.record(record.instance_id) is MISS
    finally:
        other.close()


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from gateway.instances.changes import ChangeLog
from gateway.instances.sqlite_store import SqliteStore

data_dir, instance_id, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store, changes = SqliteStore(data_dir), ChangeLog(data_dir)

class Announce:
    def changed(self, ids, digests):
        changes.changed(ids, digests)
        if when == "before-commit":
            os.kill(os.getpid(), signal.SIGKILL)

    def changed_all(self):
        changes.changed_all()

with changes.exclusive():
    store.delete(instance_id, announce=Announce())
    if when == "after-commit":
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
async def test_a_writer_killed_mid_change_leaves_no_stale_entry(
    registry: Registry, make_settings: Callable[..., Settings], when: str
) -> None:
    """A process `kill -9`ed inside its delete: others serve exactly what was committed."""
    record, _ = await registry.resolve(CONFIG)
    assert (await registry.get(record.instance_id)).instance_id == record.instance_id  # cached
    settings = make_settings()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        KILLED_WRITER,
        str(settings.data_dir),
        record.instance_id,
        when,
        cwd=REPO_ROOT,
    )
    assert await proc.wait() == -9
    if when == "after-commit":
        with pytest.raises(UnknownInstance):
            await registry.get(record.instance_id)
    else:
        assert registry.api_key(await registry.get(record.instance_id)) == KEYS[0]
    # The dead writer's lock went with it: this process can still write.
    other = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEYS[3])
    assert (await asyncio.wait_for(registry.resolve(other), 10))[1] is True


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
