"""Fast fake OpenAI and Anthropic endpoints with canned answers, run as their own process.

    python -m benchmarks.fake_providers --port 9000 [--extra-ports 1000 --ports-file F]

Unlike tests/fakes (which record every call and compute each answer), these answer from
prebuilt bytes, so "direct" measures little more than HTTP itself. They still answer the
two prompts of powermem's memory add with inference (fact extraction, then the memory
update decision) in the JSON shape powermem parses, and embeddings of the size asked for, so
a stock powermem-server pointed at them stores real memories.

`--extra-ports N` serves the same endpoints on N more loopback ports (written as a JSON list
to `--ports-file`): N distinct provider origins for the relay, from one process.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["FACT", "anthropic_request", "chat_request", "embedding", "make_app"]

TEXT = '{"facts": ["The user likes tea", "The user lives in Lyon"]}'
PIECES = [TEXT[i : i + 16] for i in range(0, len(TEXT), 16)]
SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
# powermem's fact-extraction prompt, and the memory-update prompt that follows it.
_FACTS_PROMPT = b"Personal Information Organizer"
_UPDATE_PROMPT = b"New facts:"
# What the fake extracts from every conversation, and decides to add.
FACT = "The user likes green tea in the morning"
_WORD = re.compile(r"\w+")


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


def embedding(text: str, dims: int) -> list[float]:
    """Words hashed into `dims` signed buckets, normalised: texts sharing words are close."""
    vec = [0.0] * dims
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vec[int.from_bytes(digest[:4], "big") % dims] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    if not any(vec):
        vec[0] = 1.0
    return [v / norm for v in vec]


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def _openai_plain(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "created": 0,
            "model": "gpt-4o-mini",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()


def _openai_events() -> list[bytes]:
    chunk = {"id": "chatcmpl-bench", "created": 0, "model": "gpt-4o-mini"}
    chunk["object"] = "chat.completion.chunk"
    deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in PIECES)]
    events = [
        _sse(None, {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
        for d in deltas
    ]
    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
    return [*events, _sse(None, {**chunk, "choices": [end]}), _sse(None, "[DONE]")]


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
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
        for p in PIECES
    ]
    stop = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    events = [
        _sse("message_start", {"type": "message_start", "message": start}),
        _sse("content_block_start", block),
        *(_sse("content_block_delta", d) for d in deltas),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {**stop, "usage": {"output_tokens": 5}}),
        _sse("message_stop", {"type": "message_stop"}),
    ]
    return json.dumps(message).encode(), events


_OPENAI_PLAIN = _openai_plain(TEXT)
_OPENAI_EVENTS = _openai_events()
_FACTS = _openai_plain(json.dumps({"facts": [FACT]}))
_UPDATE = _openai_plain(json.dumps({"memory": [{"id": "0", "text": FACT, "event": "ADD"}]}))
_ANTHROPIC_PLAIN, _ANTHROPIC_EVENTS = _anthropic_bytes()


def _streamed(body: bytes) -> bool:
    return b'"stream": true' in body or b'"stream":true' in body


async def _stream(request: web.Request, events: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers=SSE)
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if _streamed(body):
        return await _stream(request, _OPENAI_EVENTS)
    answer = _OPENAI_PLAIN
    if _UPDATE_PROMPT in body:
        answer = _UPDATE
    elif _FACTS_PROMPT in body:
        answer = _FACTS
    return web.Response(body=answer, content_type="application/json")


async def _messages(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if _streamed(body):
        return await _stream(request, _ANTHROPIC_EVENTS)
    return web.Response(body=_ANTHROPIC_PLAIN, content_type="application/json")


def _embeddings(dims: int) -> Any:
    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
        size = int(body.get("dimensions") or dims)
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(t, size)}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        answer = {"object": "list", "data": data, "model": "fake-embedding", "usage": usage}
        return web.json_response(answer)

    return handler


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(embedding_dims: int = 64) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/embeddings", _embeddings(embedding_dims))
    app.router.add_get("/health", _ok)
    return app


async def _serve(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(args.embedding_dims), access_log=None)
    await runner.setup()
    extra: list[int] = []
    for _ in range(args.extra_ports):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=64).start()
        extra.append(sock.getsockname()[1])
    if args.ports_file:
        # Written before the main port answers, so whoever waits for /health finds it.
        Path(args.ports_file).write_text(json.dumps(extra))
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake LLM providers for benchmarks")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--extra-ports", type=int, default=0)
    parser.add_argument("--ports-file")
    parser.add_argument("--embedding-dims", type=int, default=64)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the standard loop only makes "direct" a little slower
        asyncio.run(_serve(args))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
