"""The relay's request body: the little the relay relies on, checked in one parse.

An OpenAI Chat Completions body passes through to the provider as it came (the instance's
model replaces `model`), so only what the relay itself reads is declared: `messages`, a
non-empty list of objects each with a string `role` (the Anthropic translation walks them),
and `stream`, strictly true or false (it decides how the answer is read). Everything else is
the provider's business and passes through untouched.

Declared as `TypedDict`s, so pydantic parses the JSON and checks it in one pass and hands back
plain dicts: about 2 µs for a typical 3 KB memory-extraction call, less than `json.loads`
alone (see `benchmarks/micro.py`). The OpenAPI `ChatRequest` schema is generated from it.
JSON that is too deep, or integers beyond 4 300 digits, are a 400 like any other bad JSON.
"""

from __future__ import annotations

from typing import Annotated, Any, Required, cast

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from gateway.errors import InvalidBody
from gateway.validation import field_of, json_error

__all__ = ["CHAT_COMPLETION", "CHAT_REQUEST", "ChatCompletion", "ChatRequest", "parse_chat_request"]

_PASS_THROUGH = ConfigDict(extra="allow", strict=True, hide_input_in_errors=True)


class ChatMessage(TypedDict, total=False):
    """One message; `content`, `tool_calls`, `name`, … pass through as sent."""

    __pydantic_config__ = _PASS_THROUGH  # type: ignore[misc]

    role: Required[str]


class ChatRequest(TypedDict, total=False):
    """An OpenAI Chat Completions request; fields not named here pass through as sent.

    `model` is one of them: the instance's model replaces it, whatever it was.
    """

    __pydantic_config__ = _PASS_THROUGH  # type: ignore[misc]

    messages: Required[Annotated[list[ChatMessage], Field(min_length=1)]]
    stream: bool


class ChatChoice(TypedDict, total=False):
    __pydantic_config__ = _PASS_THROUGH  # type: ignore[misc]

    index: Required[int]
    message: Required[dict[str, Any]]
    finish_reason: str | None


class ChatCompletion(TypedDict, total=False):
    """A non-streamed answer, as the relay returns it (documentation: providers' answers pass
    through, and the Anthropic translation builds this shape)."""

    __pydantic_config__ = _PASS_THROUGH  # type: ignore[misc]

    object: Required[str]
    choices: Required[list[ChatChoice]]
    id: str
    created: int
    model: str
    usage: dict[str, Any]


CHAT_REQUEST: TypeAdapter[ChatRequest] = TypeAdapter(ChatRequest)
CHAT_COMPLETION: TypeAdapter[ChatCompletion] = TypeAdapter(ChatCompletion)


def _explain(exc: ValidationError) -> InvalidBody:
    errors = exc.errors(include_url=False, include_input=False)
    for item in errors:
        if (body := json_error(item)) is not None:
            return body
    first = errors[0]
    field = field_of(first)
    if field == "stream":
        message = "'stream' must be true or false."
    elif field.startswith("messages."):
        position = field.split(".")[1]
        message = f"messages[{position}] must be an object with a string 'role'."
    else:
        message = "'messages' must be a non-empty list of chat messages."
    return InvalidBody(message, details={"field": field or "messages"})


def parse_chat_request(raw: bytes | str) -> dict[str, Any]:
    """The body as a plain dict, or `InvalidBody` saying what is wrong (never quoting it)."""
    try:
        return cast(dict[str, Any], CHAT_REQUEST.validate_json(raw))
    except ValidationError as exc:
        raise _explain(exc) from None
