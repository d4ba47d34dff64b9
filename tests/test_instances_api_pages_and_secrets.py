"""The management API's pages (issue 11.8) and instance secrets (issue 9.5), over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from tests.conftest import OperatorFactory

Client = TestClient[web.Request, web.Application]
KEY = "sk-pages-and-secrets-0123456789"


def body(n: int, **fields: str) -> dict[str, str]:
    return {"provider": "openai", "model": f"model-{n}", "api_key": f"{KEY}-{n}"} | fields


async def data_of(response: Any, status: int = 200) -> Any:
    answer = await response.json()
    assert response.status == status, answer
    return answer["data"]


# -- pages ------------------------------------------------------------------------------------


async def test_pages_walk_every_instance_once_in_a_stable_order(gateway: Client) -> None:
    """limit=3 over 7 instances: three pages, nothing repeated or skipped, null at the end."""
    for n in range(7):
        await data_of(await gateway.post("/api/v1/instances", json=body(n)), 201)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = await data_of(await gateway.get("/api/v1/instances", params=query))
        assert page["total"] == 7 and len(page["instances"]) <= 3
        seen += [i["instance_id"] for i in page["instances"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 7


async def test_filters_narrow_the_page_and_the_total(gateway: Client) -> None:
    """client= and provider= select, and `total` counts what matches."""
    await gateway.post("/api/v1/instances", json=body(1, client="cursor"))
    await gateway.post("/api/v1/instances", json=body(2, client="codex"))
    await gateway.post(
        "/api/v1/instances", json={"provider": "ollama", "model": "m", "client": "codex"}
    )
    codex = await data_of(await gateway.get("/api/v1/instances", params={"client": "codex"}))
    assert codex["total"] == 2 and {i["client"] for i in codex["instances"]} == {"codex"}
    both = await data_of(
        await gateway.get("/api/v1/instances", params={"client": "codex", "provider": "ollama"})
    )
    assert both["total"] == 1 and both["instances"][0]["provider"] == "ollama"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=ten", "limit"),
        ("provider=skynet", "provider"),
        ("client=two%20words", "client"),
        ("cursor=not-a-cursor", "cursor"),
        ("limt=5", None),
        ("limit=1&limit=2", None),
    ],
)
async def test_a_bad_page_request_is_a_400_not_everything(
    gateway: Client, query: str, field: str | None
) -> None:
    """Out-of-range sizes, unknown filters, forged cursors and typos are refused."""
    response = await gateway.get(f"/api/v1/instances?{query}")
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"]["code"] == "INVALID_CONFIG"
    if field:
        assert answer["error"]["details"].get("field") == field


# -- instance secrets -------------------------------------------------------------------------


@pytest.fixture
async def shared(operator: OperatorFactory, make_settings: Callable[..., Settings]) -> Client:
    """A gateway in shared mode (as when it listens beyond loopback)."""
    return await operator(create_app(make_settings(shared=True)))


async def test_a_shared_gateway_answers_the_secret_once_and_shows_it_nowhere(
    shared: Client,
) -> None:
    """201 carries the secret; the repeat, the list and the instance never do."""
    first = await data_of(await shared.post("/api/v1/instances", json=body(1)), 201)
    secret = first["secret"]
    assert secret and first["instance"]["has_secret"] is True
    again = await data_of(await shared.post("/api/v1/instances", json=body(1)))
    assert "secret" not in again
    listed = await shared.get("/api/v1/instances")
    shown = await shared.get(f"/api/v1/instances/{first['instance_id']}")
    for response in (listed, shown):
        assert secret not in await response.text()


async def test_a_loopback_gateway_issues_no_secret(gateway: Client) -> None:
    """Not shared: registration answers no secret field at all."""
    data = await data_of(await gateway.post("/api/v1/instances", json=body(1)), 201)
    assert "secret" not in data and data["instance"]["has_secret"] is False


async def test_rotation_replaces_the_secret_and_revocation_removes_it(shared: Client) -> None:
    """The rotated secret binds and the old one no longer does; revoked, none does."""
    first = await data_of(await shared.post("/api/v1/instances", json=body(1)), 201)
    instance_id, old = first["instance_id"], first["secret"]
    registry = shared.server.app[REGISTRY]
    rotated = await data_of(await shared.post(f"/api/v1/instances/{instance_id}/secret"))
    assert rotated["instance_id"] == instance_id and rotated["secret"] != old
    record = await registry.get(instance_id)
    assert registry.verify_secret(record, rotated["secret"])
    assert not registry.verify_secret(record, old)
    revoked = await data_of(await shared.delete(f"/api/v1/instances/{instance_id}/secret"))
    assert revoked == {"instance_id": instance_id, "revoked": True}
    record = await registry.get(instance_id)
    assert not registry.verify_secret(record, None)
    assert not registry.verify_secret(record, rotated["secret"])
    shown = await data_of(await shared.get(f"/api/v1/instances/{instance_id}"))
    assert shown["has_secret"] is False


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_secret_calls_need_the_admin_token(shared: Client, method: str) -> None:
    """Rotating someone's secret would lock them out (or let the caller in): admin only."""
    first = await data_of(await shared.post("/api/v1/instances", json=body(1)), 201)
    path = f"/api/v1/instances/{first['instance_id']}/secret"
    response = await shared.request(method, path, headers={"Authorization": "Bearer guess"})
    assert response.status == 401
    registry = shared.server.app[REGISTRY]
    assert registry.verify_secret(await registry.get(first["instance_id"]), first["secret"])


async def test_secrets_of_unknown_bad_or_file_instances_are_refused(
    operator: OperatorFactory, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """404 for an unknown id, 400 for a malformed one, 409 for an instances.yaml entry."""
    (tmp_path / "instances.yaml").write_text(
        "instances:\n  pmem-yaml:\n    provider: ollama\n    model: llama3\n"
    )
    client = await operator(create_app(make_settings(shared=True)))
    unknown = await client.post("/api/v1/instances/pmem-0000000000000000/secret")
    malformed = await client.post("/api/v1/instances/-bad!/secret")
    from_file = await client.delete("/api/v1/instances/pmem-yaml/secret")
    assert (unknown.status, malformed.status, from_file.status) == (404, 400, 409)


async def test_other_methods_on_the_secret_are_405_and_never_forwarded(
    shared: Client, recorder: Any
) -> None:
    """GET or PUT on /secret is ours (405 with Allow), not powermem's."""
    response = await shared.get("/api/v1/instances/pmem-0000000000000000/secret")
    assert response.status == 405 and response.headers["Allow"] == "POST, DELETE"
    assert recorder.requests == []
