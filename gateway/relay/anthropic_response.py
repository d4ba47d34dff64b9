"""Anthropic Messages response (and error) → OpenAI `chat.completion` (and error) shape."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Usage",
    "finish_reason",
    "from_anthropic_error",
    "from_anthropic_response",
    "openai_error",
    "openai_error_type",
    "strip_json_fences",
]

JSON = dict[str, Any]

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "billing_error": "insufficient_quota",
    "api_error": "server_error",
    "overloaded_error": "service_unavailable_error",
}

_STATUS_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    529: "service_unavailable_error",
}

# The whole answer is one fenced block: ```json … ``` (language tag optional).
_WHOLE_FENCE = re.compile(r"```[\w-]*[^\S\n]*\n?(.*?)\s*```", re.DOTALL)
# A fenced block somewhere inside prose ("Here is the JSON: ```json … ```").
_ANY_FENCE = re.compile(r"```[\w-]*[^\S\n]*\n(.*?)\n?[^\S\n]*```", re.DOTALL)


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; OpenAI's prompt count includes cached and cache-written input."""

    input_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    completion_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_tokens + self.cache_read_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def update(self, usage: Any) -> Usage:
        """Fold in an Anthropic `usage` object.

        Anthropic's counts are cumulative over a stream (message_start, then message_delta), and
        a field may be missing or null in either, so each count keeps the largest value seen.
        """
        if not isinstance(usage, dict):
            return self
        return Usage(
            input_tokens=max(self.input_tokens, _int(usage.get("input_tokens"))),
            cache_creation_tokens=max(
                self.cache_creation_tokens, _int(usage.get("cache_creation_input_tokens"))
            ),
            cache_read_tokens=max(
                self.cache_read_tokens, _int(usage.get("cache_read_input_tokens"))
            ),
            completion_tokens=max(self.completion_tokens, _int(usage.get("output_tokens"))),
        )

    def to_openai(self) -> JSON:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_tokens},
        }


def finish_reason(stop_reason: Any) -> str:
    """Map an Anthropic `stop_reason` to an OpenAI `finish_reason`."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def strip_json_fences(text: str) -> str:
    """Unwrap a markdown code fence around a JSON answer; anything else is returned unchanged."""
    stripped = text.strip()
    whole = _WHOLE_FENCE.fullmatch(stripped)
    if whole:
        return whole.group(1).strip()
    for match in _ANY_FENCE.finditer(stripped):
        candidate = match.group(1).strip()
        try:
            json.loads(candidate)
        except ValueError:
            continue
        return candidate
    return text


def from_anthropic_response(
    resp: JSON, *, model: str, json_mode: bool, created: int | None = None
) -> JSON:
    """Translate an Anthropic message into an OpenAI `chat.completion` object."""
    texts: list[str] = []
    tool_calls: list[JSON] = []
    for block in resp.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
        # thinking, redacted_thinking and server-tool blocks have no Chat Completions form.
    text = "".join(texts)
    if json_mode and text:
        text = strip_json_fences(text)
    message: JSON = {"role": "assistant", "content": text or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["refusal"] = None
    return {
        "id": f"chatcmpl-{resp.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(resp.get("stop_reason")),
            }
        ],
        "usage": Usage().update(resp.get("usage")).to_openai(),
    }


def openai_error(status: int, message: str, type_: str, code: str | None = None) -> JSON:
    """Build an OpenAI error body; an empty `type_` is derived from the HTTP `status`."""
    return {
        "error": {
            "message": message,
            "type": type_ or _type_for_status(status),
            "param": None,
            "code": code,
        }
    }


def openai_error_type(anthropic_type: Any, status: int) -> str:
    """The OpenAI error type for an Anthropic one, falling back on the HTTP status."""
    if isinstance(anthropic_type, str) and anthropic_type in _ERROR_TYPES:
        return _ERROR_TYPES[anthropic_type]
    return _type_for_status(status)


def from_anthropic_error(status: int, body: bytes) -> tuple[str, str]:
    """Read an Anthropic error body into (message, OpenAI error type)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"], openai_error_type(error.get("type"), status)
    # Not Anthropic's JSON (a proxy's HTML page, say): keep a short, readable excerpt.
    excerpt = " ".join(body.decode("utf-8", errors="replace").split())[:300]
    message = f"Anthropic answered HTTP {status}" + (f": {excerpt}" if excerpt else ".")
    return message, _type_for_status(status)


def _type_for_status(status: int) -> str:
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
