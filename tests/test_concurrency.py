"""Concurrent first requests never create twins, in one process or across several."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.binding import instance_of
from tests.conftest import SpawnWorkers
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
HEADERS = {
    "X-PowerMem-LLM-Provider": "anthropic",
    "X-PowerMem-LLM-Model": "claude-sonnet-4-6",
    "X-PowerMem-LLM-Api-Key": "sk-ant-test-concurrency-0123456789",
    "X-PowerMem-Client": "claude-code",
}


def summarise(answers: list[tuple[int, str, str | None]]) -> tuple[set[int], set[str], int]:
    """Statuses, distinct instance ids, and how many answers said they created the instance."""
    statuses = {status for status, _, _ in answers}
    ids = {instance_id for _, instance_id, _ in answers}
    created = sum(flag == "true" for _, _, flag in answers)
    return statuses, ids, created


async def first_request(client: Client) -> tuple[int, str, str | None]:
    response = await client.post("/api/v1/memories", json={"content": "hi"}, headers=HEADERS)
    await response.read()
    return (
        response.status,
        response.headers["X-PowerMem-Instance"],
        response.headers.get("X-PowerMem-Instance-Created"),
    )


async def test_hundred_simultaneous_first_requests_make_one_instance(
    gateway: Client, recorder: Recorder
) -> None:
    """100 identical first requests at once: one instance, one `Created: true`, one id."""
    answers = await asyncio.gather(*(first_request(gateway) for _ in range(100)))
    statuses, ids, created = summarise(answers)
    assert statuses == {200}
    assert len(ids) == 1 and created == 1
    listed = await gateway.server.app[REGISTRY].list()
    assert [r.instance_id for r in listed] == list(ids)
    assert len(recorder.requests) == 100
    assert {instance_of(s.headers["baggage"]) for s in recorder.requests} == {ids.pop()}


async def test_simultaneous_explicit_and_implicit_registrations_agree(gateway: Client) -> None:
    """POSTs and header-bound requests racing for one configuration share one instance."""
    body = {
        "provider": HEADERS["X-PowerMem-LLM-Provider"],
        "model": HEADERS["X-PowerMem-LLM-Model"],
        "api_key": HEADERS["X-PowerMem-LLM-Api-Key"],
        "client": HEADERS["X-PowerMem-Client"],
    }
    posts = [gateway.post("/api/v1/instances", json=body) for _ in range(25)]
    responses = await asyncio.gather(*posts, *(first_request(gateway) for _ in range(25)))
    registered = [r for r in responses if isinstance(r, aiohttp.ClientResponse)]
    bound = [r for r in responses if isinstance(r, tuple)]
    ids = {(await r.json())["data"]["instance_id"] for r in registered} | summarise(bound)[1]
    assert len(ids) == 1
    assert sorted(r.status for r in registered).count(201) + summarise(bound)[2] == 1
    assert len(await gateway.server.app[REGISTRY].list()) == 1


async def test_two_apps_on_one_data_dir_make_one_instance(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """Two gateways in one loop on one data dir, hit at once, agree on a single instance."""
    one: Client = await aiohttp_client(GatewayTestServer(create_app(make_settings())))
    two: Client = await aiohttp_client(GatewayTestServer(create_app(make_settings())))
    answers = await asyncio.gather(*(first_request(c) for _ in range(30) for c in (one, two)))
    statuses, ids, created = summarise(answers)
    assert statuses == {200} and len(ids) == 1 and created == 1
    assert len(await one.server.app[REGISTRY].list()) == 1
    assert len(await two.server.app[REGISTRY].list()) == 1


async def test_two_gateway_processes_on_one_data_dir_make_one_instance(
    spawn_workers: SpawnWorkers,
    upstream: TestServer,
    recorder: Recorder,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Two worker processes of one `serve`, sharing a data dir, hit at once, make one instance."""
    data_dir = tmp_path / "shared-data"
    upstream_url = str(upstream.make_url("")).rstrip("/")
    first, second = spawn_workers(2, upstream=upstream_url, data_dir=data_dir)
    await asyncio.gather(first.wait_healthy(), second.wait_healthy())

    async def hit(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str | None]:
        async with session.post(
            url + "/api/v1/memories", json={"content": "hi"}, headers=HEADERS
        ) as response:
            await response.read()
            return (
                response.status,
                response.headers["X-PowerMem-Instance"],
                response.headers.get("X-PowerMem-Instance-Created"),
            )

    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(hit(session, p.url) for _ in range(50) for p in (first, second))
        )
    statuses, ids, created = summarise(answers)
    assert statuses == {200}, (first.output(), second.output())
    assert len(ids) == 1 and created == 1
    assert len(recorder.requests) == 100

    first.stop()
    second.stop()
    registry = await Registry.open(make_settings(data_dir=data_dir))
    try:
        assert [r.instance_id for r in await registry.list()] == list(ids)
        usage = await registry.usage(ids.pop())
    finally:
        await registry.close()
    assert usage["requests"] == 100
