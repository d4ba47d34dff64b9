"""A gateway killed with `kill -9` mid-burst leaves a whole registry that lost nothing it acked."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.sqlite_store import DB_FILE
from gateway.settings import Settings
from tests.conftest import SpawnGateway

REGISTRATIONS = 400
KILL_AFTER = 60


def key_of(n: int) -> str:
    return f"sk-test-crash-{n:06d}-abcdefghij"


async def test_kill_nine_mid_burst_keeps_every_acknowledged_instance(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Every id answered 201/200 before the kill is present, with its key, after reopening."""
    data_dir = tmp_path / "crash-data"
    gateway = await spawn_gateway(
        upstream=str(upstream.make_url("")).rstrip("/"), data_dir=data_dir
    ).wait_healthy()
    acked: dict[str, int] = {}
    killed = asyncio.Event()
    limit = asyncio.Semaphore(24)

    async def register(session: aiohttp.ClientSession, n: int) -> None:
        body = {"provider": "openai", "model": f"model-{n}", "api_key": key_of(n)}
        async with limit:
            if killed.is_set():
                return
            try:
                async with session.post(gateway.url + "/api/v1/instances", json=body) as answer:
                    data = await answer.json()
                    if answer.status in (200, 201):
                        acked[data["data"]["instance_id"]] = n
            except (TimeoutError, aiohttp.ClientError):
                return  # in flight when the process died: never acknowledged
        if len(acked) >= KILL_AFTER and not killed.is_set():
            killed.set()
            gateway.kill()

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(register(session, n) for n in range(REGISTRATIONS)))

    assert killed.is_set(), "the burst ended before the kill"
    assert gateway.proc.returncode == -9
    assert len(acked) >= KILL_AFTER

    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (rows,) = db.execute("SELECT count(*) FROM instances").fetchone()
    finally:
        db.close()
    assert len(acked) <= rows < REGISTRATIONS

    registry = await Registry.open(make_settings(data_dir=data_dir))
    try:
        present = {r.instance_id: r for r in await registry.list()}
        missing = set(acked) - set(present)
        assert not missing, f"{len(missing)} acknowledged registrations were lost"
        for instance_id, n in acked.items():
            assert registry.api_key(present[instance_id]) == key_of(n)
            assert present[instance_id].model == f"model-{n}"
        first_id, n = next(iter(acked.items()))
        record, created = await registry.resolve(
            InstanceConfig.parse(provider="openai", model=f"model-{n}", api_key=key_of(n))
        )
        assert (record.instance_id, created) == (first_id, False)
    finally:
        await registry.close()


async def test_restarted_gateway_serves_acknowledged_ids(
    spawn_gateway: SpawnGateway, upstream: TestServer, tmp_path: Path
) -> None:
    """After `kill -9` a new gateway process on the same data dir binds requests to the old ids."""
    data_dir = tmp_path / "restart-data"
    upstream_url = str(upstream.make_url("")).rstrip("/")
    first = await spawn_gateway(upstream=upstream_url, data_dir=data_dir).wait_healthy()
    async with aiohttp.ClientSession() as session:
        ids = []
        for n in range(5):
            body = {"provider": "deepseek", "model": f"m-{n}", "api_key": key_of(n)}
            async with session.post(first.url + "/api/v1/instances", json=body) as answer:
                assert answer.status == 201
                ids.append((await answer.json())["data"]["instance_id"])
        first.kill()
        second = await spawn_gateway(upstream=upstream_url, data_dir=data_dir).wait_healthy()
        for instance_id in ids:
            async with session.get(
                second.url + "/api/v1/memories", headers={"X-PowerMem-Instance": instance_id}
            ) as answer:
                assert answer.status == 200, await answer.text()
                assert answer.headers["X-PowerMem-Instance"] == instance_id
        headers = {
            "X-PowerMem-LLM-Provider": "deepseek",
            "X-PowerMem-LLM-Model": "m-0",
            "X-PowerMem-LLM-Api-Key": key_of(0),
        }
        async with session.get(second.url + "/api/v1/memories", headers=headers) as answer:
            assert answer.headers["X-PowerMem-Instance"] == ids[0]
            assert "X-PowerMem-Instance-Created" not in answer.headers
