"""`POST /relay/v1/chat/completions`: powermem's LLM calls, sent on to each caller's provider.

powermem runs with its LLM pointed here. Each call it makes carries, in its W3C `baggage`,
the `powermem.instance` member the proxy put on the request that caused it; that picks the
provider, model and key. No member means the default LLM of the global .env.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.errors import InvalidBody, ProviderError, RelayAuthRequired
from gateway.http.appkeys import CLIENT_LABEL, INSTANCE_ID, METRICS, REGISTRY, RELAY
from gateway.http.auth import bearer_matches
from gateway.http.bodies import read_json_object
from gateway.proxy.baggage import instance_from_baggage
from gateway.relay.anthropic import (
    StreamTranslator,
    from_anthropic_response,
    json_mode_requested,
    stream_usage_requested,
    to_anthropic_request,
)
from gateway.relay.sse import SSEParser
from gateway.relay.target import Target

__all__ = ["routes"]

log = logging.getLogger("gateway.relay")
routes = web.RouteTableDef()
MAX_BODY = 16 * 1024 * 1024
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json_object(request, MAX_BODY)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise InvalidBody("'messages' must be a non-empty list of chat messages.")
    for position, message in enumerate(body["messages"]):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidBody(f"messages[{position}] must be an object with a 'role'.")
    # Streaming is decided here, so a truthy non-boolean must not reach a provider that streams.
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidBody("'stream' must be true or false.")
    return body


@routes.post("/relay/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    if not bearer_matches(request.headers.get("Authorization"), relay.token):
        raise RelayAuthRequired(
            "The relay needs its token: 'Authorization: Bearer <relay token>' "
            "(see `powermem-gateway upstream-env`)."
        )
    instance_id = instance_from_baggage(request.headers.getall("baggage", []))
    body = await _body(request)
    if instance_id is not None and (probe := relay.probes.get(instance_id)) is not None:
        # A wiring probe from `POST /gateway/probe`: answered here, no provider is called,
        # and the empty fact list means powermem stores nothing.
        relay.stats.seen(instance_id)
        if not probe.done():
            probe.set_result(None)
        return web.json_response(_probe_answer(body))
    target = await relay.target(instance_id)
    if target.instance_id is not None:
        request[INSTANCE_ID], request[CLIENT_LABEL] = target.instance_id, target.client
    registry = request.app[REGISTRY]
    start = time.perf_counter()
    usage, failed = (0, 0), True
    try:
        call = _anthropic if target.spec.wire == "anthropic" else _openai
        response, usage, whole = await call(request, relay, target, body)
        # A stream that broke off after it started is an error too, though the caller's
        # status line already said 200.
        failed = not whole
    finally:
        request.app[METRICS].relay_call(
            instance_id=target.instance_id,
            client=target.client,
            provider=target.spec.name,
            seconds=time.perf_counter() - start,
            error=failed,
            tokens=usage,
        )
        if target.instance_id:
            registry.count(
                target.instance_id,
                relay_calls=1,
                relay_errors=int(failed),
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
            )
    return response


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


# A provider's answer that breaks off: before our status line it becomes an OpenAI error;
# after it, the stream is cut (no [DONE]) so the caller cannot mistake it for a whole answer.
_BROKEN = (aiohttp.ClientError, TimeoutError)


def _broken(target: Target, exc: BaseException) -> ProviderError:
    if isinstance(exc, TimeoutError):
        return ProviderError(
            f"{target.spec.name} stopped sending its answer (timeout).",
            status=504,
            error_type="timeout",
        )
    return ProviderError(
        f"{target.spec.name} broke off its answer ({type(exc).__name__}).", status=502
    )


async def _json_answer(target: Target, upstream: aiohttp.ClientResponse) -> tuple[bytes, Any]:
    """The provider's whole answer and its JSON object, or a 502 saying it sent something else."""
    try:
        raw = await upstream.read()
    except _BROKEN as exc:
        raise _broken(target, exc) from None
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise ProviderError(
            f"{target.spec.name} sent an answer that is not a JSON object "
            f"({upstream.content_type or 'no content type'}, {len(raw)} bytes).",
            status=502,
        )
    return raw, payload


def _event_stream(target: Target, upstream: aiohttp.ClientResponse) -> None:
    if upstream.content_type != "text/event-stream":
        raise ProviderError(
            f"{target.spec.name} answered a streaming request with "
            f"{upstream.content_type or 'no content type'} instead of an event stream.",
            status=502,
        )


def _cut(request: web.Request, target: Target, exc: BaseException) -> None:
    if isinstance(exc, ConnectionResetError):
        log.debug("caller left during a %s stream", target.spec.name)
    else:
        log.warning("%s stream broke off: %s", target.spec.name, type(exc).__name__)
    if request.transport is not None:
        request.transport.close()


# What a provider call gave: the response, (prompt, completion) tokens, and whether it was whole.
Outcome = tuple[web.StreamResponse, tuple[int, int], bool]


async def _openai(
    request: web.Request, relay: Any, target: Target, body: dict[str, Any]
) -> Outcome:
    """OpenAI-compatible providers: the request passes through with the instance's model."""
    body = {**body, "model": target.model}
    upstream = await relay.pool.post(target, body)
    async with upstream:
        if body.get("stream") is not True:
            raw, payload = await _json_answer(target, upstream)
            answer = web.Response(body=raw, content_type="application/json")
            return answer, _openai_usage(payload), True
        _event_stream(target, upstream)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        parser, usage = SSEParser(), (0, 0)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                for event in parser.feed(chunk):
                    # Only the (last) chunk that carries usage is worth decoding.
                    if '"usage"' in event.data:
                        with contextlib.suppress(ValueError):
                            usage = _openai_usage(json.loads(event.data)) or usage
        except (*_BROKEN, ConnectionResetError) as exc:
            _cut(request, target, exc)
            return response, usage, False
        await response.write_eof()
        return response, usage, True


async def _anthropic(
    request: web.Request, relay: Any, target: Target, body: dict[str, Any]
) -> Outcome:
    """Anthropic: translated to the Messages API and back, streaming chunk by chunk."""
    message = to_anthropic_request(body, model=target.model)
    upstream = await relay.pool.post(target, message)
    async with upstream:
        if not message.get("stream"):
            _, answer = await _json_answer(target, upstream)
            out = from_anthropic_response(
                answer, model=target.model, json_mode=json_mode_requested(body)
            )
            usage = out.get("usage") or {}
            tokens = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
            return web.json_response(out), tokens, True
        translator = StreamTranslator(
            model=target.model, include_usage=stream_usage_requested(body)
        )
        _event_stream(target, upstream)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        parser = SSEParser()
        try:
            async for chunk in upstream.content.iter_any():
                for event in parser.feed(chunk):
                    if out_bytes := translator.feed_event(event):
                        await response.write(out_bytes)
            if translator.complete or translator.failed:
                await response.write(translator.finish())
                await response.write_eof()
            elif request.transport is not None:
                # The provider ended the stream early: no [DONE], so it is not taken as whole.
                request.transport.close()
        except (*_BROKEN, ConnectionResetError) as exc:
            _cut(request, target, exc)
        usage = translator.usage
        whole = translator.complete and not translator.failed
        return response, (usage.prompt_tokens, usage.completion_tokens), whole
