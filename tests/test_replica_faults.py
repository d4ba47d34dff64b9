"""Replicas on one PostgreSQL registry under faults: a replica killed mid-registration, the
database restarted under load, a master key rotated while they serve, a wrong key (issue 13)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.cluster import ADMIN, SECRET, Stream, register, start_replicas, team_env
from tests.conftest import REPO_ROOT, SpawnGateway
from tests.fakes.providers import FakeOpenAI
from tests.servers import PostgresServer

KEYS = [f"sk-replica-fault-{n:04d}-abcdefghijklmnop" for n in range(80)]
NEW_SECRET = "team-master-secret-rotated-9876543210"


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, free to be stopped and started."""
    server = PostgresServer()
    yield server
    server.close()


def _url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def _body(n: int, provider: FakeOpenAI | None = None) -> dict[str, str]:
    body = {"provider": "openai", "model": f"model-{n}", "api_key": KEYS[n]}
    if provider is not None:
        body["base_url"] = provider.url
    return body


async def test_a_replica_killed_mid_registration_loses_and_doubles_nothing(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kill -9` of one of three replicas during a burst: every answered registration is
    there, every configuration has one id, and the survivors keep registering and updating."""
    team_env(monkeypatch)
    a, b, c = await start_replicas(
        spawn_gateway, 3, upstream=_url(upstream), database_url=database_url, root=tmp_path
    )
    answered: dict[int, str] = {}

    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            target = (a, b, c)[n % 3]
            try:
                status, instance_id = await register(session, target, _body(n % 40))
            except aiohttp.ClientError:
                return  # the killed replica's connections
            if status in (200, 201):
                assert answered.setdefault(n % 40, instance_id) == instance_id

        burst = [asyncio.create_task(one(n)) for n in range(80)]
        await asyncio.sleep(0.05)
        b.kill()
        await asyncio.gather(*burst)
        assert len(answered) > 10
        for n in range(40):
            status, instance_id = await register(session, a, _body(n))
            assert status in (200, 201)
            if n in answered:
                assert (status, instance_id) == (200, answered[n])
        async with session.get(a.url + "/api/v1/instances?limit=1000", headers=ADMIN) as r:
            listed = (await r.json())["data"]
        items = listed["instances"] if isinstance(listed, dict) else listed
        assert len(items) == 40 == len({i["instance_id"] for i in items})
        put = {"model": "after-the-kill"}
        async with session.put(
            f"{c.url}/api/v1/instances/{answered[min(answered)]}", json=put, headers=ADMIN
        ) as r:
            assert r.status == 200


async def test_a_database_restart_under_load_gives_503s_then_recovers_by_itself(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    provider: FakeOpenAI,
    own_postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the database is down, bound requests get 503 with Retry-After, never a stale or
    wrong answer; once it is back the replicas serve again, and a PUT reaches both."""
    team_env(monkeypatch)
    database_url = own_postgres.create_database("outage")
    a, b = await start_replicas(
        spawn_gateway, 2, upstream=_url(upstream), database_url=database_url, root=tmp_path
    )
    async with aiohttp.ClientSession() as session:
        status, instance_id = await register(session, a, _body(0, provider))
        assert status == 201
        stream = Stream(session, instance_id)
        load = asyncio.create_task(stream.run([a, b], concurrency=3, seconds=90))
        await asyncio.sleep(0.5)
        before = stream.served
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.sleep(3.0)
        async with session.get(b.url + "/gateway/ready") as response:
            assert response.status == 503 and response.headers["Retry-After"]
            error = (await response.json())["error"]
            assert error["details"]["database"] == "postgresql"
        during = stream.unavailable
        await asyncio.to_thread(own_postgres.start)
        served_again = False
        for _ in range(300):  # at most 30 s: the replicas reconnect by themselves
            mark = stream.served
            await asyncio.sleep(0.1)
            if stream.served > mark:
                served_again = True
                break
        assert served_again, stream.errors[-5:]
        put = {"model": "v-1", "api_key": KEYS[1]}
        async with session.put(
            f"{a.url}/api/v1/instances/{instance_id}", json=put, headers=ADMIN
        ) as r:
            assert r.status == 200, await r.text()
        stream.acked = 1
        await asyncio.sleep(0.5)
        stream.stop()
        await load
        async with session.get(b.url + "/gateway/ready") as response:
            database = (await response.json())["data"]["database"]
            assert response.status == 200
            assert database == {
                "kind": "postgresql",
                "reachable": True,
                "cache": "listen",
                "cache_lease": True,
            }
    assert stream.errors == []
    assert stream.stale == []
    assert before > 0 and during > 0


async def test_a_master_key_rotation_under_load_serves_every_call_with_its_own_key(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    provider: FakeOpenAI,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replicas restarted with the new secret (and the old as previous) keep serving while
    `secret rotate` re-encrypts the registry; afterwards a replica with only the old secret
    refuses to start, in one line."""
    team_env(monkeypatch)
    upstream_url = _url(upstream)
    first = await start_replicas(
        spawn_gateway, 2, upstream=upstream_url, database_url=database_url, root=tmp_path
    )
    async with aiohttp.ClientSession() as session:
        ids = [(await register(session, first[0], _body(n, provider)))[1] for n in range(12)]
        for replica in first:
            replica.stop()
        team_env(monkeypatch, secret=NEW_SECRET)
        monkeypatch.setenv("POWERMEM_GATEWAY_PREVIOUS_SECRET", SECRET)
        replicas = await start_replicas(
            spawn_gateway, 2, upstream=upstream_url, database_url=database_url, root=tmp_path
        )
        streams = [Stream(session, instance_id) for instance_id in ids[:4]]
        loads = [asyncio.create_task(s.run(replicas, seconds=60)) for s in streams]
        await asyncio.sleep(0.3)
        rotate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "secret",
            "rotate",
            "--database-url",
            database_url,
            "--data-dir",
            str(tmp_path / "cli"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        output = (await rotate.communicate())[0].decode()
        assert rotate.returncode == 0, output
        assert "12 stored key(s) re-encrypted" in output
        await asyncio.sleep(0.5)
        for stream in streams:
            stream.stop()
        await asyncio.gather(*loads)
    for stream in streams:
        assert stream.errors == [] and stream.stale == [] and stream.served > 0
    for call in provider.calls:
        n = int(call["json"]["model"].rsplit("-", 1)[1])
        assert call["authorization"] == f"Bearer {KEYS[n]}"
    monkeypatch.delenv("POWERMEM_GATEWAY_PREVIOUS_SECRET")
    team_env(monkeypatch, secret=SECRET)
    refused = subprocess.run(  # noqa: ASYNC221 - a short-lived child, waited for on purpose
        [
            sys.executable,
            "-m",
            "gateway",
            "instances",
            "list",
            "--database-url",
            database_url,
            "--data-dir",
            str(tmp_path / "old-key"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        timeout=60,
    )
    assert refused.returncode == 1
    error = refused.stderr.strip()
    assert error.count("\n") == 0 and "is not the one" in error and "PREVIOUS_SECRET" in error


async def test_a_replica_without_the_shared_secrets_refuses_to_start(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No master secret, or no relay token, with a database URL: a one-line refusal, and no
    key or token file generated into the data dir."""
    monkeypatch.setenv("POWERMEM_GATEWAY_RELAY_TOKEN", "pgr-only-the-token-0123456789")
    no_secret = spawn_gateway(
        upstream=_url(upstream),
        data_dir=tmp_path / "no-secret",
        extra=("--database-url", database_url),
    )
    assert no_secret.proc.wait(timeout=60) == 1
    assert "POWERMEM_GATEWAY_SECRET" in no_secret.output()
    monkeypatch.delenv("POWERMEM_GATEWAY_RELAY_TOKEN")
    monkeypatch.setenv("POWERMEM_GATEWAY_SECRET", SECRET)
    no_token = spawn_gateway(
        upstream=_url(upstream),
        data_dir=tmp_path / "no-token",
        extra=("--database-url", database_url),
    )
    assert no_token.proc.wait(timeout=60) == 1
    assert "POWERMEM_GATEWAY_RELAY_TOKEN" in no_token.output()
    for data_dir in ("no-secret", "no-token"):
        names = {p.name for p in (tmp_path / data_dir).glob("*")}
        assert not names & {"master.key", "relay.token"}
