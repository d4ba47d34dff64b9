"""Responses in powermem's envelope, and the one place errors become HTTP responses."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError, ProviderError

__all__ = ["error_body", "error_middleware", "error_payload", "error_response", "ok"]

log = logging.getLogger("gateway.errors")


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ok(
    data: Any, message: str = "ok", *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"success": True, "data": data, "message": message, "timestamp": _timestamp()}
    return web.json_response(body, status=status, headers=headers)


def _openai_error(exc: GatewayError) -> dict[str, Any]:
    error_type = exc.error_type if isinstance(exc, ProviderError) else _openai_type(exc.status)
    return {
        "error": {
            "message": exc.message,
            "type": error_type,
            "code": exc.code.lower(),
            "param": None,
        }
    }


def _openai_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_error",
    }.get(status, "api_error")


def error_payload(exc: GatewayError, *, openai_shape: bool = False) -> dict[str, Any]:
    """The error as the caller reads it: powermem's envelope, or OpenAI's shape on the relay."""
    if openai_shape:
        return _openai_error(exc)
    return {
        "success": False,
        "error": {"code": exc.code, "message": exc.message, "details": exc.details},
        "timestamp": _timestamp(),
    }


def error_body(exc: GatewayError, *, openai_shape: bool = False) -> bytes:
    """`error_payload` as the bytes of a JSON body (for answers written by the front)."""
    return json.dumps(error_payload(exc, openai_shape=openai_shape)).encode()


def error_response(exc: GatewayError, *, openai_shape: bool = False) -> web.Response:
    body = error_payload(exc, openai_shape=openai_shape)
    return web.json_response(body, status=exc.status, headers=exc.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every `GatewayError`, and aiohttp's own 404/405/413, in the caller's error shape."""
    openai_shape = request.path.startswith("/relay/")
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except GatewayError as exc:
        return error_response(exc, openai_shape=openai_shape)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        generic = GatewayError(exc.reason or "request failed")
        generic.status = exc.status  # type: ignore[misc]
        generic.code = exc.reason.upper().replace(" ", "_")  # type: ignore[misc]
        return error_response(generic, openai_shape=openai_shape)
    except Exception:
        # Tracebacks may hold request data; log the type and route only.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(
            GatewayError("Internal gateway error; see the gateway log."), openai_shape=openai_shape
        )
