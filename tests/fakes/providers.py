"""Fake LLM providers: small real aiohttp servers speaking the OpenAI and Anthropic wire formats.

Each fake records every request (path, headers, JSON body, and the `baggage` header) in
`.calls`, so a test can assert which key, model and instance served a call. Chat answers come
from `replies.reply_for`, which makes powermem's pipelines (fact extraction, memory updates,
profiles…) actually store things. `fail(status, times)` makes the next calls fail, for retry
tests. Use as `async with FakeOpenAI() as fake:` or `await aiohttp_server(fake.app)` followed
by `fake.bind(server)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from .replies import content_text, prompt_kind, reply_for

__all__ = ["FakeAnthropic", "FakeOpenAI", "FakeProvider", "embed_text"]

_P = TypeVar("_P", bound="FakeProvider")
_WORD = re.compile(r"\w+", re.UNICODE)


def embed_text(text: str, dims: int) -> list[float]:
    """Bag-of-words hashed into `dims` signed buckets, L2-normalised: texts sharing words are
    close, identical texts are identical, and nothing depends on randomness."""
    vec = [0.0] * dims
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dims
        vec[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0:
        vec[0], norm = 1.0, 1.0
    return [v / norm for v in vec]


class FakeProvider:
    """Shared plumbing: lifecycle, call recording, and injected failures."""

    url_suffix = ""

    def __init__(self, *, embedding_dims: int = 64) -> None:
        self.embedding_dims = embedding_dims
        self.calls: list[dict[str, Any]] = []
        self.app = web.Application()
        self._server: TestServer | None = None
        self._root = ""
        self._fail_status = 0
        self._fail_times = 0
        self._fail_paths: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Base URL a client library expects (OpenAI's includes `/v1`, Anthropic's does not)."""
        if not self._root:
            raise RuntimeError("fake provider is not started")
        return self._root + self.url_suffix

    def bind(self, server: TestServer) -> None:
        """Adopt a server started by pytest-aiohttp's `aiohttp_server(fake.app)`."""
        self._root = str(server.make_url("")).rstrip("/")

    async def start(self) -> None:
        self._server = TestServer(self.app, host="127.0.0.1")
        await self._server.start_server()
        self.bind(self._server)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def __aenter__(self: _P) -> _P:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def fail(self, status: int = 500, times: int = 1, *, paths: tuple[str, ...] = ()) -> None:
        """Answer the next `times` requests (to `paths`, default all) with `status`."""
        self._fail_status, self._fail_times, self._fail_paths = status, times, paths

    def calls_to(self, path_suffix: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"].endswith(path_suffix)]

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        call = {
            "method": request.method,
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "authorization": request.headers.get("Authorization"),
            "x_api_key": request.headers.get("x-api-key"),
            "baggage": request.headers.get("baggage"),
            "json": body,
            "time": time.time(),
        }
        self.calls.append(call)
        return call

    def _injected_failure(self, path: str) -> int:
        if self._fail_times <= 0 or (self._fail_paths and not path.endswith(self._fail_paths)):
            return 0
        self._fail_times -= 1
        return self._fail_status


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


async def _stream(request: web.Request, chunks: list[bytes]) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


class FakeOpenAI(FakeProvider):
    """OpenAI: `/v1/chat/completions` (plain and SSE), `/v1/embeddings`, `/v1/models`."""

    url_suffix = "/v1"

    def __init__(self, *, embedding_dims: int = 64) -> None:
        super().__init__(embedding_dims=embedding_dims)
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_get("/v1/models", self._models)

    def _error(self, status: int) -> web.Response:
        err = {"message": f"injected failure {status}", "type": "server_error", "code": None}
        return web.json_response({"error": err}, status=status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request)
        if status := self._injected_failure(request.path):
            return self._error(status)
        body = call["json"] if isinstance(call["json"], dict) else {}
        messages = body.get("messages") or []
        call["kind"] = prompt_kind(messages)
        text = reply_for(messages)
        model = body.get("model", "fake-model")
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            obj = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return web.json_response(obj)
        chunk = {**base, "object": "chat.completion.chunk"}
        pieces = [text[i : i + 16] for i in range(0, len(text), 16)] or [""]
        deltas = [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
        chunks = [
            _sse(None, {**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
            for d in deltas
        ]
        end = {"index": 0, "delta": {}, "finish_reason": "stop"}
        chunks += [_sse(None, {**chunk, "choices": [end]}), _sse(None, "[DONE]")]
        return await _stream(request, chunks)

    async def _embeddings(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        if status := self._injected_failure(request.path):
            return self._error(status)
        body = call["json"] if isinstance(call["json"], dict) else {}
        inputs = body.get("input", "")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
        dims = int(body.get("dimensions") or self.embedding_dims)
        data = [
            {"object": "embedding", "index": i, "embedding": embed_text(t, dims)}
            for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        model = body.get("model", "fake-embedding")
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        models = [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]
        return web.json_response({"object": "list", "data": models})


class FakeAnthropic(FakeProvider):
    """Anthropic Messages API: `/v1/messages`, plain and with the exact SSE event sequence."""

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request)
        if status := self._injected_failure(request.path):
            err = {"type": "api_error", "message": f"injected failure {status}"}
            return web.json_response({"type": "error", "error": err}, status=status)
        body = call["json"] if isinstance(call["json"], dict) else {}
        system = body.get("system") or ""
        system = content_text(system)
        messages = body.get("messages") or []
        call["kind"] = prompt_kind(messages, system)
        text = reply_for(messages, system)
        model = body.get("model", "claude-fake")
        usage = {"input_tokens": 10, "output_tokens": 5}
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(message)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        pieces = [text[i : i + 16] for i in range(0, len(text), 16)] or [""]
        chunks = [
            _sse("message_start", {"type": "message_start", "message": start}),
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
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
                for p in pieces
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
        return await _stream(request, chunks)

    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/v1/messages", self._messages)
