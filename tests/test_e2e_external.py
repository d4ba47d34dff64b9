"""End to end with `--upstream`: the gateway in front of a powermem server run by the operator.

The stock powermem-server is started as `powermem-gateway upstream-env` says (its LLM at the
gateway's relay, W3C baggage on). powermem forwards the baggage it receives to its embedder
too, so the fake embedder shows exactly what powermem was sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.app import create_app
from gateway.proxy.managed import free_port
from gateway.settings import Settings
from tests.binding import instance_of
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.frontserver import GatewayTestServer
from tests.powermem_server import PowermemFactory

pytest_plugins = ["tests.conftest_powermem"]
pytestmark = pytest.mark.e2e

RELAY_TOKEN = "pgr-external-relay-token-0123456789"
KEY = "sk-ant-external-0123456789abcdef"
HEADERS = {
    "X-PowerMem-LLM-Provider": "anthropic",
    "X-PowerMem-LLM-Model": "claude-haiku-4-5",
    "X-PowerMem-LLM-Api-Key": KEY,
}


@pytest.fixture
async def anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake  # type: ignore[misc]


async def _call(
    session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with session.post(url, json=body, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.json()


async def test_stock_powermem_behind_the_gateway_with_and_without_instances(
    tmp_path: Path,
    powermem_factory: PowermemFactory,
    fake_embedder: FakeOpenAI,
    fake_llm: FakeOpenAI,
    anthropic: FakeAnthropic,
) -> None:
    """No headers, LLM headers, then the id alone: each works, and only ids travel upstream."""
    port = free_port()
    powermem = await powermem_factory(f"http://127.0.0.1:{port}/relay/v1", llm_key=RELAY_TOKEN)
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        f"LLM_PROVIDER=openai\nLLM_API_KEY=sk-default-0123456789\nLLM_MODEL=default-model\n"
        f"OPENAI_LLM_BASE_URL={fake_llm.url}\n"
    )
    settings = Settings(
        port=port,
        upstream=powermem.url,
        data_dir=tmp_path / "data",
        instances_file=tmp_path / "instances.yaml",
        env_file=env_file,
        relay_token=RELAY_TOKEN,
    )
    server = GatewayTestServer(create_app(settings), host="127.0.0.1", port=port)
    await server.start_server()
    base = f"http://127.0.0.1:{port}/api/v1/memories"
    try:
        async with aiohttp.ClientSession() as session:
            # No headers: forwarded as is, the default LLM serves it.
            status, headers, body = await _call(
                session, base, {"content": "I drink espresso.", "user_id": "u"}
            )
            assert status == 200, body
            assert "X-PowerMem-Instance" not in headers
            assert fake_llm.calls and not anthropic.calls
            # Only our nonce rides along (it proves the request came through the gateway).
            assert {instance_of(c["baggage"]) for c in fake_embedder.calls} == {None}

            # LLM headers: the instance is made, and powermem sees only its id.
            fake_embedder.calls.clear()
            headers_with_base = {**HEADERS, "X-PowerMem-LLM-Base-Url": anthropic.url}
            status, headers, body = await _call(
                session,
                base,
                {"content": "I own a red bicycle.", "user_id": "u"},
                headers_with_base,
            )
            assert status == 200, body
            instance_id = headers["X-PowerMem-Instance"]
            assert headers["X-PowerMem-Instance-Created"] == "true"
            assert {c["x_api_key"] for c in anthropic.calls} == {KEY}
            assert {instance_of(c["baggage"]) for c in fake_embedder.calls} == {instance_id}

            # The id alone, for a search (embedding only) and another add.
            fake_embedder.calls.clear()
            by_id = {"X-PowerMem-Instance": instance_id, "baggage": "secret=leak"}
            status, headers, body = await _call(
                session, base + "/search", {"query": "red bicycle", "user_id": "u"}, by_id
            )
            assert status == 200, body
            assert headers["X-PowerMem-Instance"] == instance_id
            assert body["data"]["results"][0]["content"] == "I own a red bicycle"
            status, _, body = await _call(
                session, base, {"content": "I sail on weekends.", "user_id": "u"}, by_id
            )
            assert status == 200, body
            assert {instance_of(c["baggage"]) for c in fake_embedder.calls} == {instance_id}
            # The key goes to its own provider and nowhere else.
            calls = fake_embedder.calls + fake_llm.calls
            assert KEY not in json.dumps(calls)
            assert not any(
                "secret=leak" in (c["baggage"] or "") or "x-powermem-llm-api-key" in c["headers"]
                for c in calls
            )
    finally:
        await server.close()
    # powermem's own files (database, logs) never saw the key either.
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
