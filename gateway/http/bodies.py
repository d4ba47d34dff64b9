"""Reading a JSON object body with a size cap, the one way every gateway endpoint does it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import InvalidBody

__all__ = ["read_json_object"]


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or `InvalidBody` saying what is wrong (never quoting it)."""
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
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidBody("Request body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        # Only the position: the parser's message may quote the body, which may hold a key.
        raise InvalidBody(
            f"Request body is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    if not isinstance(body, dict):
        raise InvalidBody("Request body must be a JSON object.")
    return body
