"""The optional per-instance limit: 429 with Retry-After in the envelope, nothing forwarded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from freezegun import freeze_time

from gateway.http.app import create_app
from gateway.settings import Settings
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]


def _headers(key: str) -> dict[str, str]:
    return {
        "X-PowerMem-LLM-Provider": "openai",
        "X-PowerMem-LLM-Model": "gpt-4o",
        "X-PowerMem-LLM-Api-Key": key,
    }


async def test_an_instance_over_its_limit_gets_429_and_nothing_is_forwarded(
    aiohttp_client: Any, make_settings: Callable[..., Settings], recorder: Recorder
) -> None:
    """The fourth request in a minute with a limit of 3 is refused with Retry-After."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(instance_rate_limit=3)))
    )
    a = _headers("sk-rate-limited-a-0123456789")
    for _ in range(3):
        assert (await client.get("/api/v1/memories", headers=a)).status == 200
    response = await client.get("/api/v1/memories", headers=a)
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-PowerMem-Instance"]
    body = await response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert len(recorder.requests) == 3


async def test_the_limit_is_per_instance_and_leaves_unbound_requests_alone(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """Another instance, and requests without any instance, keep their own allowance."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(instance_rate_limit=1)))
    )
    assert (await client.get("/x", headers=_headers("sk-first-instance-0123456789"))).status == 200
    assert (await client.get("/x", headers=_headers("sk-first-instance-0123456789"))).status == 429
    assert (await client.get("/x", headers=_headers("sk-second-instance-012345678"))).status == 200
    for _ in range(3):
        assert (await client.get("/x")).status == 200


async def test_the_allowance_refills_with_time(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """A minute later an instance that hit its limit may send again."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(instance_rate_limit=2)))
    )
    headers = _headers("sk-refilled-instance-0123456")
    with freeze_time("2026-11-24 12:00:00") as clock:
        assert (await client.get("/x", headers=headers)).status == 200
        assert (await client.get("/x", headers=headers)).status == 200
        assert (await client.get("/x", headers=headers)).status == 429
        clock.tick(61)
        assert (await client.get("/x", headers=headers)).status == 200
