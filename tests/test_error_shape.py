"""The one error family, its mapping to HTTP statuses and codes, and the envelope, pinned."""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import errors
from gateway.errors import GatewayError
from gateway.http.envelope import error_response

Client = TestClient[web.Request, web.Application]

# Every error the gateway can answer with: its status and code. Adding a class without a row
# here fails `test_every_error_class_is_pinned`, so a new error is always a deliberate choice.
PINNED: dict[str, tuple[int, str]] = {
    "GatewayError": (500, "INTERNAL_ERROR"),
    "BadRequest": (400, "INVALID_REQUEST"),
    "InvalidHeader": (400, "INVALID_HEADER"),
    "InvalidConfig": (400, "INVALID_CONFIG"),
    "InvalidBody": (400, "INVALID_BODY"),
    "UnsupportedMediaType": (415, "UNSUPPORTED_MEDIA_TYPE"),
    "Forbidden": (403, "FORBIDDEN"),
    "BaseUrlRefused": (403, "BASE_URL_REFUSED"),
    "AdminAuthRequired": (401, "UNAUTHORIZED"),
    "RelayAuthRequired": (401, "UNAUTHORIZED"),
    "NotFound": (404, "NOT_FOUND"),
    "MethodNotAllowed": (405, "METHOD_NOT_ALLOWED"),
    "UnknownInstance": (404, "INSTANCE_NOT_FOUND"),
    "ConfigConflict": (409, "CONFLICT"),
    "ReadOnlyInstance": (409, "INSTANCE_READ_ONLY"),
    "RateLimited": (429, "RATE_LIMIT_EXCEEDED"),
    "AdminAuthThrottled": (429, "RATE_LIMIT_EXCEEDED"),
    "InstanceCapReached": (429, "RATE_LIMIT_EXCEEDED"),
    "MasterKeyMissing": (503, "MASTER_KEY_MISSING"),
    "StoredKeyRejected": (409, "INSTANCE_KEY_REJECTED"),
    "StoredKeyUnavailable": (409, "INSTANCE_KEY_UNAVAILABLE"),
    "ServiceUnavailable": (503, "SERVICE_UNAVAILABLE"),
    "NotReady": (503, "SERVICE_UNAVAILABLE"),
    "StorageError": (503, "SYSTEM_STORAGE_ERROR"),
    "UpstreamUnavailable": (502, "UPSTREAM_UNAVAILABLE"),
    "UpstreamStarting": (503, "UPSTREAM_STARTING"),
    "UpstreamTimeout": (504, "UPSTREAM_TIMEOUT"),
    "ProviderError": (502, "PROVIDER_ERROR"),
}
# powermem's own codes (server/models/errors.py) for the meanings the gateway shares with it.
POWERMEM_MEANINGS = {
    "GatewayError": "INTERNAL_ERROR",
    "BadRequest": "INVALID_REQUEST",
    "AdminAuthRequired": "UNAUTHORIZED",
    "RelayAuthRequired": "UNAUTHORIZED",
    "Forbidden": "FORBIDDEN",
    "NotFound": "NOT_FOUND",
    "RateLimited": "RATE_LIMIT_EXCEEDED",
    "ServiceUnavailable": "SERVICE_UNAVAILABLE",
    "StorageError": "SYSTEM_STORAGE_ERROR",
}


def assert_timestamp(value: Any) -> None:
    assert isinstance(value, str) and value.endswith("Z")
    assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def error_classes() -> dict[str, type[GatewayError]]:
    return {
        name: cls
        for name in errors.__all__
        if inspect.isclass(cls := getattr(errors, name)) and issubclass(cls, GatewayError)
    }


def test_every_error_class_is_pinned() -> None:
    """Each class of the family has exactly the status and code of the table above."""
    classes = error_classes()
    assert set(classes) == set(PINNED)
    for name, cls in classes.items():
        exc = cls("x")
        assert (exc.status, exc.code) == PINNED[name], name


def test_codes_are_powermems_where_the_meaning_is_the_same() -> None:
    """The shared meanings use powermem's own codes, so one client handles both servers."""
    powermem_errors = pytest.importorskip("server.models.errors")
    theirs = {code.value for code in powermem_errors.ErrorCode}
    for name, code in POWERMEM_MEANINGS.items():
        assert PINNED[name][1] == code and code in theirs, name


@pytest.mark.parametrize("name", sorted(PINNED))
@pytest.mark.parametrize("openai_shape", [False, True])
def test_each_error_becomes_one_response_in_its_shape(name: str, openai_shape: bool) -> None:
    """The one mapping: status from the class, body in the envelope or OpenAI's shape."""
    import json

    exc = error_classes()[name]("What was wrong, and what to do.", details={"field": "x"})
    response = error_response(exc, openai_shape=openai_shape)
    assert response.text is not None
    body = json.loads(response.text)
    assert response.status == PINNED[name][0]
    assert response.content_type == "application/json"
    if openai_shape:
        assert set(body) == {"error"}
        assert body["error"]["code"] == PINNED[name][1].lower()
        assert body["error"]["message"] == exc.message
        assert isinstance(body["error"]["type"], str)
    else:
        assert body["error"] == {
            "code": PINNED[name][1],
            "message": exc.message,
            "details": {"field": "x"},
        }


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "POST",
            "/api/v1/instances",
            {"data": b"{nope", "headers": {"Content-Type": "application/json"}},
            400,
            "INVALID_BODY",
        ),
        ("POST", "/api/v1/instances", {"json": {"provider": "openai"}}, 400, "INVALID_CONFIG"),
        ("POST", "/api/v1/instances", {"data": b"{}"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("GET", "/api/v1/instances/pmem-0000000000000000", {}, 404, "INSTANCE_NOT_FOUND"),
        (
            "GET",
            "/api/v1/instances",
            {"headers": {"Authorization": "Bearer wrong"}},
            401,
            "UNAUTHORIZED",
        ),
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
    assert body["data"] == {"instances": [], "total": 0, "next_cursor": None}
    assert isinstance(body["message"], str)
    assert_timestamp(body["timestamp"])


async def test_error_details_name_the_field(gateway: Client) -> None:
    """Config errors name the field in `details`, so clients can point at it."""
    response = await gateway.post("/api/v1/instances", json={"provider": "openai", "api_key": "k"})
    body = await response.json()
    assert body["error"]["details"] == {"field": "model"}
    assert body["error"]["message"] == "model is required."
