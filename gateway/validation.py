"""pydantic's validation errors as the gateway's own errors, never echoing what was sent.

Every declared shape (`gateway.instances.model`, `gateway.http.shapes`, `gateway.relay.body`)
is validated by pydantic with `hide_input_in_errors=True`; this module turns the first error
into one `BadRequest` whose message names the field and says what it must be, and whose
details name the field, so a client can point at it. Input values are never quoted: a key
pasted into the wrong field must not come back in an error, a log line or a trace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import BadRequest, InvalidBody

__all__ = ["Hint", "bad_request", "field_of", "json_error"]

# A field's explanation: fixed text, or text computed from the refused value (never quoting it).
Hint = str | Callable[[Any], str]
_POSITION = re.compile(r"line (\d+) column (\d+)")
_MAX_NAME = 40


def field_of(error: ErrorDetails) -> str:
    """The dotted path of the field an error is about (`messages.0.role`), or '' for the whole."""
    ctx = error.get("ctx") or {}
    if isinstance(ctx.get("field"), str):
        return str(ctx["field"])
    return ".".join(str(part) for part in error["loc"])


def json_error(error: ErrorDetails) -> InvalidBody | None:
    """The error for a body that is not a JSON object at all; None when it is one."""
    kind = error["type"]
    if kind == "json_invalid":
        # pydantic's message may in principle describe the text; keep only the position.
        where = _POSITION.search(error["msg"])
        at = f" (line {where[1]}, column {where[2]})" if where else ""
        return InvalidBody(f"Request body is not valid JSON{at}.")
    if not error["loc"] and kind in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidBody("Request body must be a JSON object.")
    return None


def _message(error: ErrorDetails, field: str, hints: Mapping[str, Hint]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    hint = hints.get(field)
    if kind == "missing" or (kind == "string_too_short" and ctx.get("min_length") == 1):
        return f"{field} is required."
    if kind in ("string_pattern_mismatch", "string_too_long", "literal_error") and hint:
        return hint(error.get("input")) if callable(hint) else hint
    if kind == "string_type":
        return f"{field} must be a string."
    if kind == "bool_type":
        return f"{field} must be true or false."
    if kind in ("list_type", "too_short") and hint:
        return hint(error.get("input")) if callable(hint) else hint
    if kind == "string_too_long":
        return f"{field} must be at most {ctx.get('max_length')} characters."
    if kind in ("model_type", "dict_type", "typed_dict_type"):
        return f"{field} must be a JSON object."
    # Our own validators raise PydanticCustomError with a finished sentence, and pydantic's
    # built-in messages describe the rule, never the value (hide_input_in_errors).
    msg = error["msg"].removeprefix("Value error, ")
    return msg if field and field.split(".")[0] in msg else f"{field}: {msg}"


def bad_request(
    exc: ValidationError,
    error: type[BadRequest],
    *,
    allowed: tuple[str, ...] = (),
    hints: Mapping[str, Hint] | None = None,
) -> BadRequest:
    """One `error` for a failed validation: the first problem, its field named in details.

    `allowed` lists the fields of the shape, for the message about unknown ones.
    """
    errors = exc.errors(include_url=False, include_input=True)
    for item in errors:
        if (body := json_error(item)) is not None:
            return body
    unknown = sorted(
        str(item["loc"][-1])[:_MAX_NAME] for item in errors if item["type"] == "extra_forbidden"
    )
    if unknown:
        tail = f"; allowed: {', '.join(allowed)}." if allowed else "."
        return error(f"unknown field(s) {', '.join(unknown)}{tail}", details={"fields": unknown})
    first = errors[0]
    field = field_of(first)
    message = _message(first, field, hints or {})
    return error(message, details={"field": field} if field else {})
