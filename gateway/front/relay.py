"""`POST /relay/v1/chat/completions`: powermem's LLM calls, each sent on to its caller's provider.

powermem runs with its LLM pointed here. Each call carries, in its W3C `baggage`, the nonce
(and instance) the proxy put on the request that caused it. The nonce must belong to a
request in flight for that instance (`gateway.proxy.ledger`): a forged, copied or stale one
is refused, and so is a call with no gateway baggage at all while we manage powermem (its
instrumentation is broken; billing the `.env` key silently would hide it). Otherwise the
instance picks provider, model and key; a request bound to no instance gets the `.env`'s LLM.

Answers pass through (OpenAI-compatible providers, scrubbed of the instance's own key) or are
translated (Anthropic), streaming event by event. Whatever happens is written back to the
request's ledger slot, which is how the proxy learns that a request's LLM calls failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.errors import (
    GatewayError,
    InvalidBody,
    MethodNotAllowed,
    NotFound,
    ProviderError,
    RelayAuthRequired,
)
from gateway.front.access import account
from gateway.front.exchange import BodyBroken, BodyTooLarge, Exchange
from gateway.http.appkeys import LEDGER, METRICS, REGISTRY, RELAY, SETTINGS
from gateway.http.auth import bearer_matches
from gateway.proxy.baggage import gateway_members
from gateway.relay.anthropic import (
    StreamTranslator,
    from_anthropic_response,
    json_mode_requested,
    stream_usage_requested,
    to_anthropic_request,
)
from gateway.relay.body import parse_chat_request
from gateway.relay.client import ProviderAnswer
from gateway.relay.relay import Relay
from gateway.relay.scrub import StreamScrubber, scrub
from gateway.relay.sse import SSEParser
from gateway.relay.target import Target
from gateway.wire.client import UpstreamBroke
from gateway.wire.heads import Header

__all__ = ["RelayEndpoint", "RelayRefused"]

log = logging.getLogger("gateway.relay")

CHAT_PATH = "/relay/v1/chat/completions"
MAX_BODY = 16 * 1024 * 1024
JSON: list[Header] = [(b"Content-Type", b"application/json")]
SSE: list[Header] = [(b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache")]
# How often a refused relay call is written to the audit log (each is counted in /metrics).
AUDIT_INTERVAL = 60.0


class RelayRefused(GatewayError):
    """A relay call that no request forwarded by this gateway explains."""

    status = 403
    code = "RELAY_CALL_REFUSED"


def reason_of(status: int) -> str:
    """The short word the ledger (and `X-PowerMem-LLM-Error`) uses for a provider failure."""
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "rate-limited"
    if status in (408, 504):
        return "timeout"
    if status == 502:
        return "unreachable"
    if 400 <= status < 500:
        return "bad-request"
    return "provider-error"


class RelayEndpoint:
    def __init__(self, app: web.Application) -> None:
        self.relay: Relay = app[RELAY]
        self.ledger = app[LEDGER]
        self.registry = app[REGISTRY]
        self.metrics = app[METRICS]
        self.managed = app[SETTINGS].upstream is None
        self._audited: dict[str, float] = {}

    async def handle(self, ex: Exchange, path: str) -> None:
        started = time.perf_counter()
        target: Target | None = None
        status = 500
        try:
            if path != CHAT_PATH:
                raise NotFound(f"The relay serves {CHAT_PATH} only.")
            if ex.method != b"POST":
                raise MethodNotAllowed("Use POST.", headers={"Allow": "POST"})
            auth = ex.header(b"authorization")
            if not bearer_matches(auth.decode("latin-1") if auth else None, self.relay.token):
                raise RelayAuthRequired(
                    "The relay needs its token: 'Authorization: Bearer <relay token>' "
                    "(see `powermem-gateway upstream-env`)."
                )
            baggage = [v.decode("latin-1") for k, v in ex.headers if k == b"baggage"]
            instance_id, nonce = gateway_members(baggage)
            slot = self._admit(instance_id, nonce, ex.peer)
            body = await _body(ex)
            self.relay.stats.seen(instance_id, proxied=slot is not None)
            if slot is not None and self.ledger.is_probe(slot):
                # A wiring probe (`POST /gateway/probe`): answered here, no provider called,
                # and the empty fact list means powermem stores nothing.
                self.ledger.record_call(slot)
                ex.respond(200, JSON, orjson.dumps(_probe_answer(body)))
                status = 200
                return
            target = await self.relay.target(instance_id)
            status = await self._call(ex, target, body, slot)
        except GatewayError as exc:
            status = exc.status
            raise
        finally:
            account(
                ex,
                route="relay",
                status=ex.status or status,
                started=started,
                instance_id=target.instance_id if target else None,
                client=target.client if target else None,
                metrics=None,
            )

    def _admit(self, instance_id: str | None, nonce: str | None, peer: str) -> int | None:
        """The ledger slot this call belongs to; None for an unproxied call that may pass."""
        if nonce is not None:
            slot = self.ledger.find(nonce, instance_id)
            if slot is not None:
                return slot
            self._refused("stale_or_forged", peer)
            raise RelayRefused(
                "This relay call's baggage names no request in flight through this gateway "
                "(forged, copied or stale); it is refused and no provider is called."
            )
        if instance_id is not None:
            self._refused("instance_without_nonce", peer)
            raise RelayRefused(
                "This relay call names an instance without the gateway's nonce: only requests "
                "forwarded by this gateway may spend an instance; refused."
            )
        if self.managed:
            self.relay.stats.unproxied += 1
            self._refused("no_baggage", peer)
            raise RelayRefused(
                "powermem's LLM call reached the relay without the gateway's baggage: its "
                "OpenTelemetry instrumentation is missing or broken, so the call is refused "
                "rather than billed to the .env key. Run `powermem-gateway doctor`."
            )
        return None

    def _refused(self, why: str, peer: str) -> None:
        self.metrics.relay_refused.labels(why).inc()
        now = time.monotonic()
        if now - self._audited.get(why, -AUDIT_INTERVAL) >= AUDIT_INTERVAL:
            self._audited[why] = now
            self.registry.audit.record("relay_refused", source=peer, fields=[why])
            log.warning("relay call refused (%s) from %s; logged once a minute", why, peer)

    async def _call(
        self, ex: Exchange, target: Target, body: dict[str, Any], slot: int | None
    ) -> int:
        started = time.perf_counter()
        usage, whole, status, reason = (0, 0), False, 502, ""
        try:
            if target.spec.wire == "anthropic":
                usage, whole = await _anthropic(ex, self.relay, target, body)
            else:
                usage, whole = await _openai(ex, self.relay, target, body)
            status = 200
        except ProviderError as exc:
            status, reason = exc.status, reason_of(exc.status)
            raise
        finally:
            failed = not whole
            if failed and status == 200:
                status, reason = 502, "bad-answer"  # a stream that broke off after its head
            elif failed and not reason:
                reason = reason_of(status)
            if slot is not None:
                self.ledger.record_call(slot, status=status if failed else 0, reason=reason)
            if failed and target.instance_id:
                self.registry.llm_failed(target.instance_id, status, reason)
            self.metrics.relay_call(
                instance_id=target.instance_id,
                client=target.client,
                provider=target.spec.name,
                seconds=time.perf_counter() - started,
                error=failed,
                tokens=usage,
            )
            if target.instance_id:
                self.registry.count(
                    target.instance_id,
                    relay_calls=1,
                    relay_errors=int(failed),
                    prompt_tokens=usage[0],
                    completion_tokens=usage[1],
                )
        return status


async def _body(ex: Exchange) -> dict[str, Any]:
    """The chat request, read whole (bounded) and checked against its declared shape
    (`gateway.relay.body`, which the OpenAPI document is generated from)."""
    try:
        raw = await ex.body.read(MAX_BODY)
    except BodyTooLarge:
        raise InvalidBody(f"Request body is larger than {MAX_BODY} bytes.") from None
    except BodyBroken:
        raise InvalidBody("The request body did not arrive whole.") from None
    return parse_chat_request(raw)


def _probe_answer(body: dict[str, Any]) -> dict[str, Any]:
    content = json.dumps({"facts": [], "memory": []})
    return {
        "id": "chatcmpl-gateway-probe",
        "object": "chat.completion",
        "created": 0,
        "model": str(body.get("model", "")),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


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


async def _openai(ex: Exchange, relay: Relay, target: Target, body: dict[str, Any]) -> Outcome:
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

    def on_chunk(chunk: bytes) -> None:
        out = scrubber.feed(chunk)
        ex.send(out)
        for event in parser.feed(out):
            # Only the (last) chunk that carries usage is worth decoding.
            if '"usage"' in event.data:
                with contextlib.suppress(orjson.JSONDecodeError):
                    usage[0] = _openai_usage(orjson.loads(event.data)) or usage[0]

    ex.send_head(200, SSE)
    ex.flush()
    whole = await _pump(ex, answer, on_chunk, scrubber.end)
    return usage[0], whole


async def _anthropic(ex: Exchange, relay: Relay, target: Target, body: dict[str, Any]) -> Outcome:
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

    def on_chunk(chunk: bytes) -> None:
        for event in parser.feed(chunk):
            if out := translator.feed_event(event):
                ex.send(scrubber.feed(out))

    def finish() -> bytes | None:
        if translator.complete or translator.failed:
            return scrubber.feed(translator.finish()) + scrubber.end()
        return None  # the provider ended early: no [DONE], so it is not taken as whole

    ex.send_head(200, SSE)
    ex.flush()
    ended = await _pump(ex, answer, on_chunk, finish)
    whole = ended and translator.complete and not translator.failed
    usage = translator.usage
    return (usage.prompt_tokens, usage.completion_tokens), whole


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
