"""With the gateway managing the stock powermem-server, only requests the gateway forwarded may
spend an instance or the `.env`'s key: a relay call with no gateway baggage, forged baggage,
or a request sent to powermem's own port around the gateway, reaches no provider."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.appkeys import METRICS, RELAY, UPSTREAM
from tests.fakes.providers import FakeOpenAI
from tests.frontserver import GatewayTestServer, managed_gateway
from tests.powermem_server import EMBEDDING_DIMS

pytestmark = pytest.mark.e2e

DEFAULT_KEY = "sk-managed-default-0123456789abcdef"
KEY = "sk-managed-instance-0123456789abcdef"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "extract facts"}]}
MEMORY = {"content": "I keep bees in Porto.", "user_id": "dora"}


def chats(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return fake.calls_to("/chat/completions")


def refusals(server: GatewayTestServer) -> float:
    """Relay calls refused so far, every reason together."""
    registry = server.app[METRICS].registry
    reasons = ("no_baggage", "instance_without_nonce", "stale_or_forged")
    return sum(
        registry.get_sample_value("powermem_gateway_relay_refused_total", {"reason": r}) or 0.0
        for r in reasons
    )


async def test_in_managed_mode_only_forwarded_requests_spend_a_key(tmp_path: Path) -> None:
    """A forwarded memory add spends its instance's key; a relay call without our baggage (the
    instrumentation broken, or an impostor with the token), with forged baggage, or a memory
    add sent straight to powermem's port with forged baggage spends nobody's, the `.env`'s
    included."""
    default, provider = FakeOpenAI(), FakeOpenAI()
    embedder = FakeOpenAI(embedding_dims=EMBEDDING_DIMS)
    for fake in (default, provider, embedder):
        await fake.start()
    server, url, _ = await managed_gateway(
        tmp_path, embedding_url=embedder.url, default_url=default.url, default_key=DEFAULT_KEY
    )
    try:
        async with aiohttp.ClientSession() as session:
            body = {"provider": "openai", "model": "m1", "api_key": KEY, "base_url": provider.url}
            async with session.post(url + "/api/v1/instances", json=body) as response:
                instance_id = (await response.json())["data"]["instance_id"]
            async with session.post(
                url + "/api/v1/memories", json=MEMORY, headers={"X-PowerMem-Instance": instance_id}
            ) as response:
                assert response.status == 200, await response.text()
                assert "X-PowerMem-LLM-Error" not in response.headers
            assert {c["authorization"] for c in chats(provider)} == {f"Bearer {KEY}"}
            provider.calls.clear()

            auth = {"Authorization": f"Bearer {server.app[RELAY].token}"}
            forged = f"powermem.instance={instance_id},powermem.nonce=0-0-{secrets.token_hex(16)}"
            for baggage in (None, f"powermem.instance={instance_id}", forged):
                headers = {**auth, **({"baggage": baggage} if baggage else {})}
                async with session.post(
                    url + "/relay/v1/chat/completions", json=CHAT, headers=headers
                ) as response:
                    assert response.status == 403
                    assert (await response.json())["error"]["code"] == "relay_call_refused"

            assert refusals(server) == 3
            powermem = server.app[UPSTREAM].url
            for baggage in (f"powermem.instance={instance_id}", forged):
                async with session.post(
                    powermem + "/api/v1/memories", json=MEMORY, headers={"baggage": baggage}
                ) as response:
                    await response.read()  # whatever powermem makes of a refused LLM call
            assert refusals(server) > 3  # powermem's LLM calls came, and were refused
            assert chats(provider) == [] and chats(default) == []
    finally:
        await server.close()
        for fake in (default, provider, embedder):
            await fake.close()
