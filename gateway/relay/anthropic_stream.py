"""Anthropic Messages stream events → OpenAI `chat.completion.chunk` SSE bytes.

Anthropic streams typed events (message_start, content_block_start/delta/stop, message_delta,
message_stop, ping, error); OpenAI callers expect a role chunk, content and tool-call deltas, a
finish chunk, an optional usage chunk and `data: [DONE]`. The translator is fed one event at a
time and returns the bytes to write right away, so nothing is buffered beyond one event.

JSON mode: a non-streamed answer has markdown fences stripped after the fact, but a stream
cannot be un-sent, and holding text back until a fence could be ruled out would defeat
streaming. Streamed JSON-mode answers are therefore passed through as generated; the system
instruction added to the request is what keeps them fence-free.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.relay.anthropic_response import Usage, finish_reason, openai_error, openai_error_type
from gateway.relay.jsonio import encode_json
from gateway.relay.sse import SSEEvent

__all__ = ["DONE", "StreamTranslator"]

JSON = dict[str, Any]

DONE = b"data: [DONE]\n\n"


class StreamTranslator:
    """Translates one Anthropic stream into the OpenAI chunk stream, event by event."""

    def __init__(
        self, *, model: str, include_usage: bool = False, created: int | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        # Replaced by the Anthropic message id at message_start, so logs can be matched up.
        self._id = f"chatcmpl-{secrets.token_hex(12)}"
        self._started = False
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._tool_has_args: set[int] = set()
        self._finish_sent = False
        self._usage = Usage()
        self._complete = False
        self._failed = False

    @property
    def usage(self) -> Usage:
        """Token counts seen so far; final once `complete` is true."""
        return self._usage

    @property
    def complete(self) -> bool:
        """Whether the provider finished the message (message_stop arrived)."""
        return self._complete

    @property
    def failed(self) -> bool:
        """Whether the provider reported an error mid-stream."""
        return self._failed

    def feed_event(self, event: SSEEvent) -> bytes:
        """Translate one parsed SSE event whose data is Anthropic's JSON."""
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return self._error("api_error", "The provider sent a stream event that is not JSON.")
        return self.feed(event.event, data)

    def feed(self, event: str, data: Mapping[str, Any]) -> bytes:
        """Translate one Anthropic event; returns the bytes to emit (often empty)."""
        if self._failed or self._complete:
            return b""
        kind = data.get("type") or event
        if kind == "message_start":
            return self._message_start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta"))
        if kind == "content_block_stop":
            return self._block_stop(data.get("index"))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._message_stop()
        if kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            message = error.get("message")
            return self._error(
                error.get("type"),
                message if isinstance(message, str) else "The provider failed mid-stream.",
            )
        return b""  # ping, and event types added after this was written

    def finish(self) -> bytes:
        """The closing `data: [DONE]`; see `complete` and `failed` for how the stream ended."""
        return DONE

    def _message_start(self, message: Any) -> bytes:
        if isinstance(message, dict):
            if isinstance(message.get("id"), str) and not self._started:
                self._id = f"chatcmpl-{message['id']}"
            self._usage = self._usage.update(message.get("usage"))
        return self._start()

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: Any, block: Any) -> bytes:
        if not isinstance(block, dict):
            return b""
        out = self._start()
        if block.get("type") == "text" and block.get("text"):
            out += self._chunk({"content": block["text"]})
        elif block.get("type") == "tool_use" and isinstance(index, int):
            position = len(self._tool_index)
            self._tool_index[index] = position
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            out += self._chunk({"tool_calls": [call]})
        return out

    def _block_delta(self, index: Any, delta: Any) -> bytes:
        if not isinstance(delta, dict):
            return b""
        out = self._start()
        if delta.get("type") == "text_delta" and delta.get("text"):
            out += self._chunk({"content": delta["text"]})
        elif delta.get("type") == "input_json_delta" and index in self._tool_index:
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                out += self._arguments(self._tool_index[index], fragment)
        # thinking, signature and citation deltas have no Chat Completions form.
        return out

    def _block_stop(self, index: Any) -> bytes:
        position = self._tool_index.get(index) if isinstance(index, int) else None
        if position is None or position in self._tool_has_args:
            return b""
        # A tool without parameters streams no input at all; "" is not JSON callers can parse.
        return self._arguments(position, "{}")

    def _arguments(self, position: int, fragment: str) -> bytes:
        self._tool_has_args.add(position)
        call = {"index": position, "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]})

    def _message_delta(self, data: Mapping[str, Any]) -> bytes:
        self._usage = self._usage.update(data.get("usage"))
        delta = data.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is None:
            return b""
        return self._finish_chunk(stop_reason)

    def _message_stop(self) -> bytes:
        out = self._start() + self._finish_chunk(None)
        self._complete = True
        if self._include_usage:
            out += self._encode(self._envelope([]) | {"usage": self._usage.to_openai()})
        return out

    def _finish_chunk(self, stop_reason: Any) -> bytes:
        if self._finish_sent:
            return b""
        self._finish_sent = True
        return self._chunk({}, finish_reason(stop_reason))

    def _error(self, anthropic_type: Any, message: str) -> bytes:
        self._failed = True
        error_type = openai_error_type(anthropic_type, 500)
        return self._encode(openai_error(500, message, error_type))

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._encode(self._envelope([choice]))

    def _envelope(self, choices: list[JSON]) -> JSON:
        body: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        # With include_usage, OpenAI puts "usage": null on every chunk but the last.
        if self._include_usage:
            body["usage"] = None
        return body

    @staticmethod
    def _encode(body: JSON) -> bytes:
        # One `data:` line: compact JSON never holds a line break (newlines are escaped).
        return b"data: " + encode_json(body) + b"\n\n"
