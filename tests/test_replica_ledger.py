"""The relay's nonce check across replicas: powermem's LLM call may land on another replica
than the one that forwarded its request, as behind a load balancer (issue 13)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.cluster import RELAY_TOKEN, register, start_replicas, team_env
from tests.conftest import SpawnGateway
from tests.fakes.providers import FakeOpenAI
from tests.fakes.upstream import Recorder

KEY = "sk-replica-ledger-0000-abcdefghijklmnop"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


async def test_a_relay_call_on_another_replica_is_honoured_and_its_failure_reported_back(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    recorder: Recorder,
    provider: FakeOpenAI,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A forwards, B relays: the call is served with A's instance, a provider failure at B
    becomes A's X-PowerMem-LLM-Error, and the request's nonce is dead once it has answered."""
    team_env(monkeypatch)
    a, b = await start_replicas(
        spawn_gateway,
        2,
        upstream=str(upstream.make_url("")).rstrip("/"),
        database_url=database_url,
        root=tmp_path,
    )
    async with aiohttp.ClientSession() as session:
        body = {"provider": "openai", "model": "gpt-4o", "api_key": KEY, "base_url": provider.url}
        _, instance_id = await register(session, a, body)
        headers = {
            "X-PowerMem-Instance": instance_id,
            "X-Relay-Token": RELAY_TOKEN,
            "X-Relay-Host": f"127.0.0.1:{b.port}",
        }
        async with session.post(a.url + "/call-llm", json=CHAT, headers=headers) as response:
            answer = await response.json()
            assert "X-PowerMem-LLM-Error" not in response.headers
        assert answer["relay_status"] == 200, answer
        assert json.loads(answer["relay_body"])["model"] == "gpt-4o"
        assert provider.calls[-1]["authorization"] == f"Bearer {KEY}"
        baggage = recorder.last.headers["baggage"]

        provider.fail(401)
        async with session.post(a.url + "/call-llm", json=CHAT, headers=headers) as response:
            answer = await response.json()
            assert answer["relay_status"] == 401
            assert response.headers["X-PowerMem-LLM-Error"] == "401 unauthorized"

        # The first request has answered: its nonce is refused on every replica.
        calls = len(provider.calls)
        relay_headers = {"Authorization": f"Bearer {RELAY_TOKEN}", "baggage": baggage}
        for replica in (a, b):
            async with session.post(
                replica.url + "/relay/v1/chat/completions", json=CHAT, headers=relay_headers
            ) as response:
                assert response.status == 403
        # A nonce of a live replica with a made-up slot tag is refused by its owner.
        replica_name = baggage.split("powermem.nonce=")[1].split(".")[0]
        forged = f"powermem.instance={instance_id},powermem.nonce={replica_name}.0-1-{'ab' * 16}"
        async with session.post(
            b.url + "/relay/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {RELAY_TOKEN}", "baggage": forged},
        ) as response:
            assert response.status == 403
        assert len(provider.calls) == calls
