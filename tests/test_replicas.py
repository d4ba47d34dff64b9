"""Several gateway replicas on one PostgreSQL registry keep one machine's guarantees (issue 13).

Real `serve` processes, each with its own data dir as if on its own host, one real PostgreSQL
server, the fake powermem in front of a fake provider. Bound requests go through the fake
powermem's `/call-llm`, which calls the relay with the request's baggage as powermem would,
so every answer says which configuration served it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.cluster import ADMIN, Stream, register, start_replicas, team_env
from tests.conftest import SpawnGateway
from tests.fakes.providers import FakeOpenAI

KEYS = [f"sk-replica-test-{n:04d}-abcdefghijklmnop" for n in range(40)]


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


def _url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def test_identical_registrations_on_three_replicas_make_one_instance(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thirty identical registrations spread over three replicas at once: one id, one 201."""
    team_env(monkeypatch)
    replicas = await start_replicas(
        spawn_gateway, 3, upstream=_url(upstream), database_url=database_url, root=tmp_path
    )
    body = {"provider": "openai", "model": "gpt-4o-mini", "api_key": KEYS[0]}
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(register(session, replicas[n % 3], body) for n in range(30))
        )
        assert sorted(status for status, _ in results) == [200] * 29 + [201]
        assert len({instance_id for _, instance_id in results}) == 1
        # The same headers on any replica bind to that one instance too.
        headers = {
            "X-PowerMem-LLM-Provider": "openai",
            "X-PowerMem-LLM-Model": "gpt-4o-mini",
            "X-PowerMem-LLM-Api-Key": KEYS[0],
        }
        for replica in replicas:
            async with session.get(replica.url + "/api/v1/memories", headers=headers) as r:
                assert r.status == 200
                assert r.headers["X-PowerMem-Instance"] == results[0][1]


@pytest.mark.parametrize("c_mode", ["--registry-cache", "--no-registry-cache"])
async def test_put_and_delete_on_one_replica_are_never_served_stale_by_the_others(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    provider: FakeOpenAI,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    c_mode: str,
) -> None:
    """B and C serve a steady stream while A answers 20 PUTs and a DELETE: no stale answer,
    whether C caches too or reads one row per request (a mixed cluster)."""
    team_env(monkeypatch)
    a, b = await start_replicas(
        spawn_gateway, 2, upstream=_url(upstream), database_url=database_url, root=tmp_path
    )
    (c,) = await start_replicas(
        spawn_gateway,
        1,
        upstream=_url(upstream),
        database_url=database_url,
        root=tmp_path / "c",
        extra=(c_mode,),
    )
    async with aiohttp.ClientSession() as session:
        body = {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "api_key": KEYS[0],
            "base_url": provider.url,
        }
        status, instance_id = await register(session, a, body)
        assert status == 201
        stream = Stream(session, instance_id)
        readers = asyncio.create_task(stream.run([b, c], concurrency=4))
        await asyncio.sleep(0.5)
        for n in range(1, 21):
            put = {"api_key": KEYS[n], "model": f"v-{n}"}
            async with session.put(
                f"{a.url}/api/v1/instances/{instance_id}", json=put, headers=ADMIN
            ) as r:
                assert r.status == 200, await r.text()
            stream.acked = n
            await asyncio.sleep(0.05)
        stream.deleting = True
        async with session.delete(f"{a.url}/api/v1/instances/{instance_id}", headers=ADMIN) as r:
            assert r.status == 200
        stream.deleted = True
        await asyncio.sleep(0.5)
        stream.stop()
        await readers
    assert stream.errors == []
    assert stream.stale == []
    assert stream.served > 40 and stream.refused > 0
    # Every provider call used a key and a model of the same version: never a torn record.
    for call in provider.calls:
        model = call["json"]["model"]
        version = int(model.rsplit("-", 1)[1]) if model.startswith("v-") else 0
        assert call["authorization"] == f"Bearer {KEYS[version]}"
