"""A client refused with 429 twice in a row on one connection waits out a hold.

As an impatient or abusive client would: it ignores `Retry-After` and retries at once on the
same keep-alive connection. After its second refusal in a row the gateway does not read that
connection until `Limits.refused_hold` has passed, so a flood of refusals costs no CPU while
it waits. One refusal followed by something else is not held; other connections from the
same address, and powermem's own 429s passed through, are never held.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.front.server import Limits
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.frontserver import GatewayTestServer
from tests.rawhttp import Raw, raw

LONG_HOLD = 30.0  # longer than any test waits: a held connection stays silent
SILENCE = 0.5


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _llm(n: int) -> dict[str, str]:
    return {
        "X-PowerMem-LLM-Provider": "openai",
        "X-PowerMem-LLM-Model": "m",
        "X-PowerMem-LLM-Api-Key": f"sk-hold-{n:06d}-abcdefgh",
    }


StartGateway = Callable[..., Awaitable[int]]


@pytest.fixture
async def start(make_settings: Callable[..., Settings]) -> AsyncIterator[StartGateway]:
    """`await start(hold, **settings)`: the gateway through its front; its port."""
    started: list[GatewayTestServer] = []

    async def go(hold: float, **overrides: Any) -> int:
        server = GatewayTestServer(create_app(make_settings(**overrides)))
        await server.start_server(limits=Limits(refused_hold=hold))
        started.append(server)
        assert server.port is not None
        return server.port

    yield go
    for server in started:
        await server.close()


async def _refused(client: Raw, port: int) -> None:
    """An implicit registration over the per-address cap of 1 (the first one was made)."""
    await client.send(_get(port, "/api/v1/memories", _llm(2)))
    answer = await client.final()
    assert answer.status == 429
    assert json.loads(answer.body)["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert answer.header("retry-after")


async def test_a_connection_refused_twice_in_a_row_waits_out_the_hold(
    start: StartGateway,
) -> None:
    port = await start(LONG_HOLD, new_instances_per_client_per_hour=1)
    async with raw(port) as first:
        await first.send(_get(port, "/api/v1/memories", _llm(1)))
        assert (await first.final()).status == 200
        await _refused(first, port)
        await _refused(first, port)  # retried at once: refused again, now held
        # At once, on the same connection: not read, so not answered.
        await first.send(_get(port, "/api/v1/memories"))
        assert await first.silent(SILENCE)
        # Another connection from the same address is served as usual.
        async with raw(port) as other:
            await other.send(_get(port, "/api/v1/memories"))
            assert (await other.final()).status == 200


async def test_one_refusal_then_another_request_is_not_held(start: StartGateway) -> None:
    """A client that hit a cap once and goes on with other work is not slowed."""
    port = await start(LONG_HOLD, new_instances_per_client_per_hour=1)
    async with raw(port) as client:
        await client.send(_get(port, "/api/v1/memories", _llm(1)))
        assert (await client.final()).status == 200
        for _ in range(3):
            await _refused(client, port)
            await client.send(_get(port, "/api/v1/memories", _llm(1)))
            assert (await client.final()).status == 200


async def test_after_the_hold_the_connection_is_served_again(start: StartGateway) -> None:
    """The hold delays, it does not close: the queued request is answered on the same
    connection, which stays usable."""
    port = await start(0.2, new_instances_per_client_per_hour=1)
    async with raw(port) as client:
        await client.send(_get(port, "/api/v1/memories", _llm(1)))
        assert (await client.final()).status == 200
        await _refused(client, port)
        await _refused(client, port)
        await client.send(_get(port, "/api/v1/memories", _llm(1)))
        assert (await client.final()).status == 200
        await client.send(_get(port, "/api/v1/memories"))
        assert (await client.final()).status == 200


async def test_admin_guesses_past_the_back_off_hold_their_connection(
    start: StartGateway,
) -> None:
    """The management API's own 429 (failed admin authentications backing off) holds too."""
    port = await start(LONG_HOLD)
    async with raw(port) as client:
        statuses = []
        for _ in range(10):
            await client.send(_get(port, "/gateway/status", {"Authorization": "Bearer wrong"}))
            statuses.append((await client.final()).status)
            if statuses[-2:] == [429, 429]:
                break
        assert statuses[-2:] == [429, 429] and set(statuses[:-2]) == {401}
        await client.send(_get(port, "/gateway/status", {"Authorization": "Bearer wrong"}))
        assert await client.silent(SILENCE)


async def test_powermem_429s_pass_through_without_a_hold(
    start: StartGateway, aiohttp_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """powermem's own rate limit is powermem's answer to give: passed on unchanged, and the
    client's next request is read at once."""

    async def limited(request: web.Request) -> web.Response:
        return web.json_response(
            {"success": False, "message": "rate limited"}, status=429, headers={"Retry-After": "7"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", limited)
    upstream = await aiohttp_server(app)
    port = await start(LONG_HOLD, upstream=str(upstream.make_url("")).rstrip("/"))
    async with raw(port) as client:
        for _ in range(3):
            await client.send(_get(port, "/api/v1/memories"))
            answer = await client.final()
            assert answer.status == 429
            assert answer.header("retry-after") == "7"
            assert json.loads(answer.body)["message"] == "rate limited"
