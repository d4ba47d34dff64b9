"""`POST /relay/v1/chat/completions`: powermem's LLM calls, sent on to each caller's provider.

powermem runs with its LLM pointed here. Each call it makes carries, in its W3C `baggage`,
the `powermem.instance` member the proxy put on the request that caused it; that picks the
provider, model and key. No member means the default LLM of the global .env.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from aiohttp import web

from gateway.appkeys import CLIENT_LABEL, INSTANCE_ID, METRICS, REGISTRY, RELAY
from gateway.auth import bearer_matches
from gateway.baggage import instance_from_baggage
from gateway.bodies import read_json_object
from gateway.errors import GatewayError, InvalidBody, RelayAuthRequired
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

routes = web.RouteTableDef()
MAX_BODY = 16 * 1024 * 1024
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json_object(request, MAX_BODY)
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise InvalidBody("'messages' must be a non-empty list of chat messages.")
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
    registry, metrics = request.app[REGISTRY], request.app[METRICS]
    start = time.perf_counter()
    try:
        if target.spec.wire == "anthropic":
            response, usage = await _anthropic(request, relay, target, body)
        else:
            response, usage = await _openai(request, relay, target, body)
    except GatewayError:
        metrics.relay_call(
            instance_id=target.instance_id,
            client=target.client,
            provider=target.spec.name,
            seconds=time.perf_counter() - start,
            error=True,
        )
        if target.instance_id:
            registry.count(target.instance_id, relay_calls=1, relay_errors=1)
        raise
    metrics.relay_call(
        instance_id=target.instance_id,
        client=target.client,
        provider=target.spec.name,
        seconds=time.perf_counter() - start,
        error=False,
        tokens=usage,
    )
    if target.instance_id:
        registry.count(
            target.instance_id,
            relay_calls=1,
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


async def _openai(
    request: web.Request, relay: Any, target: Target, body: dict[str, Any]
) -> tuple[web.StreamResponse, tuple[int, int]]:
    """OpenAI-compatible providers: the request passes through with the instance's model."""
    body = {**body, "model": target.model}
    upstream = await relay.pool.post(target, body)
    async with upstream:
        if body.get("stream") is not True:
            raw = await upstream.read()
            try:
                usage = _openai_usage(json.loads(raw))
            except ValueError:
                usage = (0, 0)
            return web.Response(body=raw, content_type="application/json"), usage
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        parser, usage = SSEParser(), (0, 0)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
            for event in parser.feed(chunk):
                # Only the (last) chunk that carries usage is worth decoding.
                if '"usage"' in event.data:
                    with contextlib.suppress(ValueError):
                        usage = _openai_usage(json.loads(event.data)) or usage
        await response.write_eof()
        return response, usage


async def _anthropic(
    request: web.Request, relay: Any, target: Target, body: dict[str, Any]
) -> tuple[web.StreamResponse, tuple[int, int]]:
    """Anthropic: translated to the Messages API and back, streaming chunk by chunk."""
    message = to_anthropic_request(body, model=target.model)
    upstream = await relay.pool.post(target, message)
    async with upstream:
        if not message.get("stream"):
            try:
                answer = await upstream.json(content_type=None)
            except ValueError:
                raise GatewayError("Anthropic sent a response that is not JSON.") from None
            out = from_anthropic_response(
                answer, model=target.model, json_mode=json_mode_requested(body)
            )
            usage = out.get("usage") or {}
            return web.json_response(out), (
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
            )
        translator = StreamTranslator(
            model=target.model, include_usage=stream_usage_requested(body)
        )
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        parser = SSEParser()
        async for chunk in upstream.content.iter_any():
            for event in parser.feed(chunk):
                if out_bytes := translator.feed_event(event):
                    await response.write(out_bytes)
        if translator.complete or translator.failed:
            await response.write(translator.finish())
            await response.write_eof()
        elif request.transport is not None:
            # The provider cut the stream: no [DONE], so the caller cannot take it as whole.
            request.transport.close()
        return response, (translator.usage.prompt_tokens, translator.usage.completion_tokens)
