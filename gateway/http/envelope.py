"""Responses in powermem's envelope, and the one place errors become HTTP responses.

Every `GatewayError` and every error aiohttp raises itself (404, 405, 413, …) leaves through
`error_middleware`, in powermem's envelope on the gateway's own routes and in OpenAI's shape
on the relay; `tests/test_error_shape.py` pins both. Bodies are built through the declared
shapes of `gateway.http.shapes`, so they match the OpenAPI document by construction.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError, MethodNotAllowed, NotFound, ProviderError
from gateway.http.shapes import Envelope, ErrorBody, ErrorEnvelope, OpenAIError, OpenAIErrorBody

__all__ = [
    "as_gateway_error",
    "error_body",
    "error_middleware",
    "error_payload",
    "error_response",
    "ok",
]

log = logging.getLogger("gateway.errors")
JSON = "application/json"
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ok(
    data: Any, message: str = "ok", *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`data` (a declared shape, or plain JSON data) in powermem's success envelope."""
    body = Envelope[Any](success=True, data=data, message=message, timestamp=_timestamp())
    return web.Response(
        text=body.model_dump_json(exclude_unset=True),
        status=status,
        headers=headers,
        content_type=JSON,
    )


def _openai_error(exc: GatewayError) -> OpenAIError:
    error_type = (
        exc.error_type
        if isinstance(exc, ProviderError)
        else _OPENAI_TYPES.get(exc.status, "api_error")
    )
    return OpenAIError(
        error=OpenAIErrorBody(
            message=exc.message, type=error_type, code=exc.code.lower(), param=None
        )
    )


def _error_shape(exc: GatewayError, openai_shape: bool) -> OpenAIError | ErrorEnvelope:
    if openai_shape:
        return _openai_error(exc)
    return ErrorEnvelope(
        success=False,
        error=ErrorBody(code=exc.code, message=exc.message, details=exc.details),
        timestamp=_timestamp(),
    )


def error_payload(exc: GatewayError, *, openai_shape: bool = False) -> dict[str, Any]:
    """The error as the caller reads it: powermem's envelope, or OpenAI's shape on the relay."""
    return _error_shape(exc, openai_shape).model_dump(mode="json")


def error_body(exc: GatewayError, *, openai_shape: bool = False) -> bytes:
    """The error as the bytes of a JSON body (for answers written by the front)."""
    return _error_shape(exc, openai_shape).model_dump_json().encode()


def error_response(exc: GatewayError, *, openai_shape: bool = False) -> web.Response:
    return web.Response(
        text=_error_shape(exc, openai_shape).model_dump_json(),
        status=exc.status,
        headers=exc.headers,
        content_type=JSON,
    )


def as_gateway_error(exc: web.HTTPException) -> GatewayError:
    """aiohttp's own errors (no route, wrong method, body over the limit) in our family."""
    if exc.status == 404:
        return NotFound("No such path on this gateway.")
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        return MethodNotAllowed(
            f"Method not supported here; use {allow or 'another method'}.",
            headers={"Allow": allow} if allow else None,
        )
    generic = GatewayError(exc.reason or "request failed")
    generic.status = exc.status  # type: ignore[misc]
    generic.code = exc.reason.upper().replace(" ", "_")  # type: ignore[misc]
    return generic


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every `GatewayError`, and aiohttp's own 4xx, in the caller's error shape."""
    openai_shape = request.path.startswith("/relay/")
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except GatewayError as exc:
        return error_response(exc, openai_shape=openai_shape)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(as_gateway_error(exc), openai_shape=openai_shape)
    except Exception:
        # Tracebacks may hold request data; log the type and route only.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(
            GatewayError("Internal gateway error; see the gateway log."), openai_shape=openai_shape
        )
