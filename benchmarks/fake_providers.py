"""Minimal OpenAI and Anthropic endpoints with canned answers, run as their own process.

    python -m benchmarks.fake_providers --port 9000

Unlike tests/fakes (which record every call and compute answers powermem can parse), these
answer from prebuilt bytes, so "direct" measures little more than HTTP itself.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from aiohttp import web

__all__ = ["anthropic_request", "chat_request", "make_app"]

TEXT = '{"facts": ["The user likes tea", "The user lives in Lyon"]}'
PIECES = [TEXT[i : i + 16] for i in range(0, len(TEXT), 16)]
SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def chat_request(*, stream: bool) -> dict[str, Any]:
    """The kind of call powermem makes: a system prompt, one user turn, JSON output."""
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Extract facts as JSON. " * 20},
            {"role": "user", "content": "I like tea and I live in Lyon."},
        ],
        "temperature": 0.1,
        "response_format": {"type": "json_object"},
        "stream": stream,
    }


def anthropic_request(*, stream: bool) -> dict[str, Any]:
    """`chat_request` as the relay translates it, for calling the fake Anthropic directly."""
    chat = chat_request(stream=stream)
    return {
        "model": "claude-fake",
        "max_tokens": 1024,
        "system": chat["messages"][0]["content"],
        "messages": [chat["messages"][1]],
        "temperature": 0.1,
        "stream": stream,
    }


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def _openai_bytes() -> tuple[bytes, list[bytes]]:
    base = {"id": "chatcmpl-bench", "created": 0, "model": "gpt-4o-mini"}
    message = {"role": "assistant", "content": TEXT}
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    plain = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }
    chunk = {**base, "object": "chat.completion.chunk"}
    deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in PIECES)]
    events = [
        _sse(None, {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
        for d in deltas
    ]
    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events += [_sse(None, {**chunk, "choices": [end]}), _sse(None, "[DONE]")]
    return json.dumps(plain).encode(), events


def _anthropic_bytes() -> tuple[bytes, list[bytes]]:
    usage = {"input_tokens": 10, "output_tokens": 5}
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-fake",
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    block = {"type": "text", "text": ""}
    events = [
        _sse("message_start", {"type": "message_start", "message": start}),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        *(
            _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in PIECES
        ),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return json.dumps(message).encode(), events


def _endpoint(plain: bytes, events: list[bytes]) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream": true' not in body and b'"stream":true' not in body:
            return web.Response(body=plain, content_type="application/json")
        response = web.StreamResponse(headers=SSE)
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    return handler


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _endpoint(*_openai_bytes()))
    app.router.add_post("/v1/messages", _endpoint(*_anthropic_bytes()))
    app.router.add_get("/health", _ok)
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description="fake LLM providers for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
