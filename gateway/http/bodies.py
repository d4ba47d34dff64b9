"""Reading a request body with a size cap, the one way every gateway endpoint does it.

The cap is applied before anything is parsed; parsing and checking is the declared shape's
job (`InstanceConfig.validate_body`, `parse_update`, `gateway.relay.body.parse_chat_request`),
in one pass of pydantic's JSON parser, which refuses integers beyond 4 300 digits and nesting
beyond a few hundred levels as invalid JSON (a 400), where `json.loads` would raise.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import InvalidBody, UnsupportedMediaType

__all__ = ["read_body", "require_json"]


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
