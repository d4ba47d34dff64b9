"""What goes back to powermem for one relay call: the provider's answer, passed through
(OpenAI-compatible, scrubbed of the instance's own key) or translated (Anthropic), whole or
streamed event by event.

A stream that breaks off, stalls, or never completes an event (past `MAX_EVENT`) is cut
toward the caller without its proper ending, so powermem never takes it for a whole answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import ProviderError
from gateway.front.exchange import Exchange
from gateway.relay.answer import ProviderAnswer
from gateway.relay.anthropic import (
    StreamTranslator,
    from_anthropic_response,
    json_mode_requested,
    stream_usage_requested,
    to_anthropic_request,
)
from gateway.relay.relay import Relay
from gateway.relay.scrub import StreamScrubber, scrub
from gateway.relay.sse import SSEParser
from gateway.relay.target import Target
from gateway.wire.client import UpstreamBroke
from gateway.wire.heads import Header

__all__ = ["JSON", "MAX_EVENT", "Outcome", "answer_anthropic", "answer_openai"]

log = logging.getLogger("gateway.relay")

JSON: list[Header] = [(b"Content-Type", b"application/json")]
SSE: list[Header] = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache")]
# The most of a provider's stream that may arrive without completing an event: no LLM sends
# events this large, and a stream that never ends its event would otherwise be held whole
# (and re-scanned on every read, stalling the event loop).
MAX_EVENT = 1024 * 1024


def _openai_usage(payload: Any) -> tuple[int, int]:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


async def _json_answer(target: Target, answer: ProviderAnswer) -> tuple[bytes, Any]:
    """The provider's whole answer and its JSON object, or a 502 saying it sent something else."""
    try:
        raw = await answer.read()
    except UpstreamBroke as exc:
        timed_out = isinstance(answer.failed, TimeoutError)
        raise ProviderError(
            f"{target.spec.name} "
            + ("stopped sending its answer (timeout)." if timed_out else f"broke off ({exc})."),
            status=504 if timed_out else 502,
            error_type="timeout" if timed_out else "provider_error",
        ) from None
    finally:
        answer.release()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        raise ProviderError(
            f"{target.spec.name} sent an answer that is not a JSON object "
            f"({answer.content_type or 'no content type'}, {len(raw)} bytes).",
            status=502,
        )
    return raw, payload


def _event_stream(target: Target, answer: ProviderAnswer) -> None:
    if answer.content_type != "text/event-stream":
        answer.release()
        raise ProviderError(
            f"{target.spec.name} answered a streaming request with "
            f"{answer.content_type or 'no content type'} instead of an event stream.",
            status=502,
        )


# What a provider call gave: (prompt, completion) tokens, and whether the answer was whole.
Outcome = tuple[tuple[int, int], bool]


async def answer_openai(
    ex: Exchange, relay: Relay, target: Target, body: dict[str, Any]
) -> Outcome:
    """OpenAI-compatible providers: the request passes through with the instance's model."""
    body = {**body, "model": target.model}
    answer = await relay.pool.post(target, body)
    if body.get("stream") is not True:
        raw, payload = await _json_answer(target, answer)
        ex.respond(200, JSON, scrub(raw, target.api_key.encode()))
        return _openai_usage(payload), True
    _event_stream(target, answer)
    scrubber = StreamScrubber(target.api_key)
    parser = SSEParser()
    usage = [(0, 0)]
    bound = _EventBound(target, answer)

    def on_chunk(chunk: bytes) -> None:
        if bound.cut:
            return
        out = scrubber.feed(chunk)
        if bound.exceeded(len(chunk), progressed=bool(out)):
            return
        ex.send(out)
        for event in parser.feed(out):
            # Only the (last) chunk that carries usage is worth decoding.
            if '"usage"' in event.data:
                with contextlib.suppress(orjson.JSONDecodeError):
                    usage[0] = _openai_usage(orjson.loads(event.data)) or usage[0]

    ex.send_head(200, SSE)
    ex.flush()
    whole = await _pump(ex, answer, on_chunk, lambda: None if bound.cut else scrubber.end())
    return usage[0], whole


async def answer_anthropic(
    ex: Exchange, relay: Relay, target: Target, body: dict[str, Any]
) -> Outcome:
    """Anthropic: translated to the Messages API and back, streaming event by event."""
    message = to_anthropic_request(body, model=target.model)
    answer = await relay.pool.post(target, message)
    if not message.get("stream"):
        _, payload = await _json_answer(target, answer)
        out = from_anthropic_response(
            payload, model=target.model, json_mode=json_mode_requested(body)
        )
        used = out.get("usage") or {}
        data = scrub(orjson.dumps(out), target.api_key.encode())
        ex.respond(200, JSON, data)
        return (used.get("prompt_tokens", 0), used.get("completion_tokens", 0)), True
    _event_stream(target, answer)
    translator = StreamTranslator(model=target.model, include_usage=stream_usage_requested(body))
    parser = SSEParser()
    scrubber = StreamScrubber(target.api_key)
    bound = _EventBound(target, answer)

    def on_chunk(chunk: bytes) -> None:
        if bound.cut:
            return
        events = parser.feed(chunk)
        if bound.exceeded(len(chunk), progressed=bool(events)):
            return
        for event in events:
            if out := translator.feed_event(event):
                ex.send(scrubber.feed(out))

    def finish() -> bytes | None:
        if bound.cut:
            return None
        if translator.complete or translator.failed:
            return scrubber.feed(translator.finish()) + scrubber.end()
        return None  # the provider ended early: no [DONE], so it is not taken as whole

    ex.send_head(200, SSE)
    ex.flush()
    ended = await _pump(ex, answer, on_chunk, finish)
    whole = ended and translator.complete and not translator.failed
    usage = translator.usage
    return (usage.prompt_tokens, usage.completion_tokens), whole


class _EventBound:
    """Counts what a provider stream sends without completing an event; past `MAX_EVENT`
    the provider's connection is closed and the caller's stream is cut."""

    def __init__(self, target: Target, answer: ProviderAnswer) -> None:
        self._target = target
        self._answer = answer
        self._pending = 0
        self.cut = False

    def exceeded(self, size: int, *, progressed: bool) -> bool:
        self._pending = 0 if progressed else self._pending + size
        if self._pending > MAX_EVENT:
            self.cut = True
            log.warning(
                "%s sent more than %d bytes without ending an event; its stream is cut",
                self._target.spec.name,
                MAX_EVENT,
            )
            self._answer.release()  # closes the connection: the stream ends as broken
        return self.cut


async def _pump(
    ex: Exchange,
    answer: ProviderAnswer,
    on_chunk: Callable[[bytes], None],
    tail: Callable[[], bytes | None],
) -> bool:
    """Stream the provider's answer to the caller; True when it ended cleanly.

    A stream that breaks off, stalls, or (`tail` returning None) ends without its proper
    ending is cut toward the caller (no `[DONE]`), so it is never mistaken for a whole answer.
    """
    done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def on_end(failure: BaseException | None) -> None:
        if not done.done():
            done.set_result(failure)

    ex.on_drain = (answer.pause, answer.resume)
    ex.on_gone = answer.release
    answer.stream(on_chunk, on_end, ex.flush)
    failure = await done
    ex.on_drain = ex.on_gone = None
    answer.release()
    last = tail() if failure is None and not ex.gone else None
    if last is None:
        if isinstance(failure, TimeoutError) or isinstance(answer.failed, TimeoutError):
            log.warning("a provider stream stalled; the caller's stream is cut")
        ex.abort()
        return False
    ex.send(last)
    ex.finish()
    return True
