"""Reading a request body with a size cap, the one way every gateway endpoint does it.

The cap is applied before anything is parsed; parsing and checking is the declared shape's
job (`InstanceConfig.validate_body`, `parse_update`, `gateway.relay.body`), in one pass of
pydantic's JSON parser, which refuses integers beyond 4 300 digits and nesting beyond a few
hundred levels as invalid JSON (a 400), where `json.loads` would raise something else.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from gateway.errors import InvalidBody, UnsupportedMediaType
from gateway.validation import bad_request

__all__ = ["read_body", "read_json_object", "require_json"]

_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def require_json(request: web.Request) -> None:
    """Management writes come as `application/json`: a browser cannot send that across
    origins without a preflight, where `text/plain` and forms go without asking."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the body as JSON with 'Content-Type: application/json'.")


async def read_body(request: web.Request, max_bytes: int) -> str:
    """The whole body as text, or `InvalidBody` when it is too large or not UTF-8."""
    too_big = InvalidBody(f"Request body is larger than {max_bytes} bytes.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_big
    # `read(n)` returns what has arrived so far, so a body sent in pieces needs a loop.
    raw = bytearray()
    while chunk := await request.content.read(max_bytes + 1 - len(raw)):
        raw += chunk
        if len(raw) > max_bytes:
            raise too_big
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("Request body is not UTF-8 text.") from None


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or `InvalidBody` saying what is wrong (never quoting it)."""
    text = await read_body(request, max_bytes)
    try:
        return _OBJECT.validate_json(text)
    except ValidationError as exc:
        raise bad_request(exc, InvalidBody) from None
