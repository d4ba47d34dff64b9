"""Provider connections stay warm per origin, and bounded in number over all origins."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.providers import PROVIDERS
from gateway.relay import client
from gateway.relay.client import ProviderPool
from gateway.relay.target import Target

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}


def _target(url: str) -> Target:
    return Target(
        spec=PROVIDERS["openai"], model="m", api_key="sk-conn-0123456789abcdef", base_url=url
    )


async def _providers(aiohttp_server: Any, count: int) -> tuple[list[str], list[set[int]]]:
    """`count` providers on their own ports, and the connections each one saw."""
    urls: list[str] = []
    connections: list[set[int]] = []
    for _ in range(count):
        seen: set[int] = set()

        async def chat(request: web.Request, seen: set[int] = seen) -> web.Response:
            assert request.transport is not None
            seen.add(id(request.transport))
            return web.json_response(ANSWER)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        server = await aiohttp_server(app)
        urls.append(str(server.make_url("/v1")))
        connections.append(seen)
    return urls, connections


async def test_calls_to_one_origin_reuse_one_connection(aiohttp_server: Any) -> None:
    """Ten sequential calls, one provider: one TCP connection, kept warm."""
    [url], [seen] = await _providers(aiohttp_server, 1)
    pool = ProviderPool(timeout=5, retries=0)
    try:
        for _ in range(10):
            (await pool.post(_target(url), CHAT)).release()
    finally:
        await pool.close()
    assert len(seen) == 1


async def test_idle_connections_over_all_origins_are_bounded(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More origins than idle connections kept: the oldest origins' go, the total stays bound."""
    monkeypatch.setattr(client, "MAX_IDLE", 4)
    urls, _ = await _providers(aiohttp_server, 8)
    pool = ProviderPool(timeout=5, retries=0)
    try:
        for url in urls:
            (await pool.post(_target(url), CHAT)).release()
            assert pool._idle <= 4
        assert sum(p.idle for p in pool._pools.values()) == pool._idle
        # The most recent origin kept its connection warm.
        assert list(pool._pools.values())[-1].idle == 1
    finally:
        await pool.close()
