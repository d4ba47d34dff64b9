"""The management API, `/api/v1/instances`: register, list, show, update, delete."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from tests.binding import instance_of
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
KEY = "sk-test-api-0123456789abcdef"
NEW_KEY = "sk-test-api-new-9876543210fedcba"
CONFIG = {
    "client": "cursor",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "api_key": KEY,
    "base_url": "https://api.example.com/v1",
}
LLM_HEADERS = {
    "X-PowerMem-Client": "cursor",
    "X-PowerMem-LLM-Provider": "openai",
    "X-PowerMem-LLM-Model": "gpt-4o-mini",
    "X-PowerMem-LLM-Api-Key": KEY,
    "X-PowerMem-LLM-Base-Url": "https://api.example.com/v1",
}
ADMIN = "admin-token-for-tests"


async def register(client: Client, **fields: str) -> str:
    response = await client.post("/api/v1/instances", json=CONFIG | fields)
    assert response.status in (200, 201), await response.text()
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


@pytest.fixture
async def admin_gateway(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> AsyncIterator[Client]:
    """A gateway whose management calls need `Authorization: Bearer admin-token-for-tests`."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(admin_token=ADMIN)))
    )
    yield client


async def test_register_answers_201_then_200_with_the_same_id(gateway: Client) -> None:
    """Registering one configuration twice creates it once and returns its id both times."""
    first = await gateway.post("/api/v1/instances", json=CONFIG)
    second = await gateway.post("/api/v1/instances", json=CONFIG)
    one, two = await first.json(), await second.json()
    assert (first.status, second.status) == (201, 200)
    assert one["success"] is True and one["message"] == "Instance registered"
    assert one["data"]["created"] is True and two["data"]["created"] is False
    assert one["data"]["instance_id"] == two["data"]["instance_id"]
    assert re.fullmatch(r"pmem-[0-9a-f]{16}", one["data"]["instance_id"])
    assert first.headers["X-PowerMem-Instance"] == one["data"]["instance_id"]
    assert first.headers["X-PowerMem-Instance-Created"] == "true"
    assert "X-PowerMem-Instance-Created" not in second.headers
    assert one["data"]["instance"]["api_key"] == "sk-t…cdef"


async def test_explicit_and_implicit_registration_share_one_id(
    gateway: Client, recorder: Recorder
) -> None:
    """A configuration registered by POST is the one LLM headers with the same values bind to."""
    instance_id = await register(gateway)
    response = await gateway.get("/api/v1/memories", headers=LLM_HEADERS)
    assert response.status == 200
    assert response.headers["X-PowerMem-Instance"] == instance_id
    assert "X-PowerMem-Instance-Created" not in response.headers
    assert instance_of(recorder.last.headers["baggage"]) == instance_id


async def test_keyless_provider_registers_without_a_key(gateway: Client) -> None:
    """A keyless local provider registers with no api_key field at all."""
    response = await gateway.post(
        "/api/v1/instances", json={"provider": "ollama", "model": "qwen3"}
    )
    assert response.status == 201
    assert (await response.json())["data"]["instance"]["api_key"] == ""


async def test_list_shows_every_instance_masked(gateway: Client) -> None:
    """The list holds each instance once, with masked keys only."""
    a = await register(gateway)
    b = await register(gateway, model="gpt-4o", api_key=NEW_KEY)
    response = await gateway.get("/api/v1/instances")
    body = await response.json()
    assert response.status == 200 and body["success"] is True
    assert body["data"]["total"] == 2
    assert {i["instance_id"] for i in body["data"]["instances"]} == {a, b}
    assert {i["api_key"] for i in body["data"]["instances"]} == {"sk-t…cdef", "sk-t…dcba"}
    text = await response.text()
    assert KEY not in text and NEW_KEY not in text


async def test_show_has_masked_key_times_and_usage(gateway: Client) -> None:
    """Show gives the masked instance, its created/updated/last-used times and counters."""
    instance_id = await register(gateway)
    quiet = (await (await gateway.get(f"/api/v1/instances/{instance_id}")).json())["data"]
    assert quiet["usage"]["requests"] == 0 and quiet["usage"]["last_used_at"] is None
    for _ in range(3):
        await gateway.get("/anything", headers={"X-PowerMem-Instance": instance_id})
    response = await gateway.get(f"/api/v1/instances/{instance_id}")
    data = (await response.json())["data"]
    assert response.status == 200
    assert data["instance_id"] == instance_id and data["api_key"] == "sk-t…cdef"
    assert data["provider"] == "openai" and data["client"] == "cursor"
    assert data["created_at"] and data["updated_at"]
    assert data["usage"]["requests"] == 3 and data["usage"]["errors"] == 0
    assert data["usage"]["last_used_at"] >= data["created_at"]
    assert KEY not in await response.text()


async def test_show_counts_upstream_errors(gateway: Client) -> None:
    """A 5xx from powermem counts as an error of the instance that sent the request."""
    instance_id = await register(gateway)
    await gateway.get("/api/v1/memories", headers={"X-PowerMem-Instance": instance_id})
    await gateway.get("/fail?status=503", headers={"X-PowerMem-Instance": instance_id})
    await gateway.get("/fail?status=404", headers={"X-PowerMem-Instance": instance_id})
    data = (await (await gateway.get(f"/api/v1/instances/{instance_id}")).json())["data"]
    assert (data["usage"]["requests"], data["usage"]["errors"]) == (3, 1)


async def test_put_keeps_the_id_and_applies_to_the_next_request(
    gateway: Client, recorder: Recorder
) -> None:
    """After PUT the id stays, the new config binds to it, and the old config no longer does."""
    instance_id = await register(gateway)
    response = await gateway.put(
        f"/api/v1/instances/{instance_id}", json={"model": "gpt-4.1", "api_key": NEW_KEY}
    )
    body = await response.json()
    assert response.status == 200 and body["message"] == "Instance updated"
    assert body["data"]["instance_id"] == instance_id
    assert body["data"]["model"] == "gpt-4.1" and body["data"]["api_key"] == "sk-t…dcba"
    assert NEW_KEY not in await response.text()

    registry = gateway.server.app[REGISTRY]
    record = await registry.get(instance_id)
    assert (record.model, registry.api_key(record)) == ("gpt-4.1", NEW_KEY)

    new_headers = LLM_HEADERS | {
        "X-PowerMem-LLM-Model": "gpt-4.1",
        "X-PowerMem-LLM-Api-Key": NEW_KEY,
    }
    bound = await gateway.get("/api/v1/memories", headers=new_headers)
    assert bound.headers["X-PowerMem-Instance"] == instance_id
    assert "X-PowerMem-Instance-Created" not in bound.headers
    assert instance_of(recorder.last.headers["baggage"]) == instance_id

    old = await gateway.get("/api/v1/memories", headers=LLM_HEADERS)
    assert old.headers["X-PowerMem-Instance"] != instance_id
    assert old.headers["X-PowerMem-Instance-Created"] == "true"


async def test_delete_then_the_id_is_404_and_nothing_is_forwarded(
    gateway: Client, recorder: Recorder
) -> None:
    """After DELETE, show, update and proxied requests with the id are 404; nothing forwarded."""
    instance_id = await register(gateway)
    response = await gateway.delete(f"/api/v1/instances/{instance_id}")
    body = await response.json()
    assert response.status == 200
    assert body["data"] == {"instance_id": instance_id, "deleted": True}

    proxied = await gateway.post(
        "/api/v1/memories", json={"content": "x"}, headers={"X-PowerMem-Instance": instance_id}
    )
    shown = await gateway.get(f"/api/v1/instances/{instance_id}")
    put = await gateway.put(f"/api/v1/instances/{instance_id}", json={"model": "m"})
    again = await gateway.delete(f"/api/v1/instances/{instance_id}")
    for answer in (proxied, shown, put, again):
        assert answer.status == 404
        assert (await answer.json())["error"]["code"] == "INSTANCE_NOT_FOUND"
    assert instance_id in (await proxied.json())["error"]["message"]
    assert recorder.requests == []
    listed = await (await gateway.get("/api/v1/instances")).json()
    assert listed["data"]["total"] == 0


async def test_put_onto_another_instances_config_is_409(gateway: Client) -> None:
    """Updating an instance into another's exact configuration is refused with 409."""
    a = await register(gateway)
    b = await register(gateway, model="gpt-4o")
    response = await gateway.put(f"/api/v1/instances/{a}", json={"model": "gpt-4o"})
    body = await response.json()
    assert response.status == 409 and body["error"]["code"] == "CONFLICT"
    assert b in body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/instances"),
        ("GET", "/api/v1/instances/{id}"),
        ("PUT", "/api/v1/instances/{id}"),
        ("DELETE", "/api/v1/instances/{id}"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {ADMIN}", ADMIN])
async def test_admin_calls_need_the_admin_token(
    admin_gateway: Client, method: str, path: str, authorization: str | None
) -> None:
    """List, show, update and delete answer 401 without the right bearer token."""
    instance_id = await register(admin_gateway)
    headers = {"Authorization": authorization} if authorization else {}
    response = await admin_gateway.request(
        method, path.format(id=instance_id), json={"model": "m2"}, headers=headers
    )
    body = await response.json()
    assert response.status == 401
    assert body["error"]["code"] == "UNAUTHORIZED"
    assert "Authorization: Bearer" in body["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ADMIN not in await response.text()
    registry = admin_gateway.server.app[REGISTRY]
    assert (await registry.get(instance_id)).model == "gpt-4o-mini"


async def test_admin_token_opens_every_management_call(admin_gateway: Client) -> None:
    """With the right token, list, show, update and delete all succeed."""
    instance_id = await register(admin_gateway)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    path = f"/api/v1/instances/{instance_id}"
    assert (await admin_gateway.get("/api/v1/instances", headers=auth)).status == 200
    assert (await admin_gateway.get(path, headers=auth)).status == 200
    assert (await admin_gateway.put(path, json={"model": "m2"}, headers=auth)).status == 200
    assert (await admin_gateway.delete(path, headers=auth)).status == 200


async def test_registration_stays_open_with_an_admin_token(
    admin_gateway: Client, recorder: Recorder
) -> None:
    """Clients register and use instances without the admin token."""
    first = await admin_gateway.post("/api/v1/instances", json=CONFIG)
    assert first.status == 201
    proxied = await admin_gateway.get("/api/v1/memories", headers=LLM_HEADERS)
    assert proxied.status == 200
    assert recorder.last.headers["baggage"].startswith("powermem.instance=pmem-")


async def test_concurrent_puts_leave_one_consistent_record(gateway: Client) -> None:
    """Racing updates of one instance either apply or answer 409; the result is one of them."""
    instance_id = await register(gateway)
    models = [f"model-{n}" for n in range(10)]
    responses = await asyncio.gather(
        *(gateway.put(f"/api/v1/instances/{instance_id}", json={"model": m}) for m in models)
    )
    assert {r.status for r in responses} <= {200, 409}
    assert any(r.status == 200 for r in responses)
    final = (await (await gateway.get(f"/api/v1/instances/{instance_id}")).json())["data"]
    assert final["model"] in models
    assert (await (await gateway.get("/api/v1/instances")).json())["data"]["total"] == 1
