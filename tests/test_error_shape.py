"""The one error shape of the management API and the proxy, pinned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


def assert_timestamp(value: Any) -> None:
    assert isinstance(value, str) and value.endswith("Z")
    assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/api/v1/instances", {"data": b"{nope"}, 400, "INVALID_BODY"),
        ("POST", "/api/v1/instances", {"json": {"provider": "openai"}}, 400, "INVALID_CONFIG"),
        ("GET", "/api/v1/instances/pmem-0000000000000000", {}, 404, "INSTANCE_NOT_FOUND"),
        (
            "GET",
            "/api/v1/memories",
            {"headers": {"X-PowerMem-Instance": "pmem-0000000000000000"}},
            404,
            "INSTANCE_NOT_FOUND",
        ),
        (
            "GET",
            "/api/v1/memories",
            {"headers": {"X-PowerMem-LLM-Provider": "openai"}},
            400,
            "INVALID_HEADER",
        ),
        ("PATCH", "/api/v1/instances/pmem-0000000000000000", {}, 405, "METHOD_NOT_ALLOWED"),
    ],
)
async def test_every_error_has_the_envelope_shape(
    gateway: Client, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    """An error is exactly success/error{code,message,details}/timestamp, as JSON."""
    response = await gateway.request(method, path, **kwargs)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"success", "error", "timestamp"}
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert_timestamp(body["timestamp"])


async def test_success_has_the_envelope_shape(gateway: Client) -> None:
    """A success is exactly success/data/message/timestamp, as JSON."""
    response = await gateway.get("/api/v1/instances")
    body = await response.json()
    assert response.status == 200 and response.content_type == "application/json"
    assert set(body) == {"success", "data", "message", "timestamp"}
    assert body["success"] is True
    assert body["data"] == {"instances": [], "total": 0}
    assert isinstance(body["message"], str)
    assert_timestamp(body["timestamp"])


async def test_error_details_name_the_field(gateway: Client) -> None:
    """Config errors name the field in `details`, so clients can point at it."""
    response = await gateway.post("/api/v1/instances", json={"provider": "openai", "api_key": "k"})
    body = await response.json()
    assert body["error"]["details"] == {"field": "model"}
    assert body["error"]["message"] == "model is required."
