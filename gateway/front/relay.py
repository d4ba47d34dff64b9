"""`POST /relay/v1/chat/completions`: powermem's LLM calls, each sent on to its caller's provider.

powermem runs with its LLM pointed here. Each call carries, in its W3C `baggage`, the nonce
(and instance) the proxy put on the request that caused it. The nonce must belong to a
request in flight for that instance (`gateway.proxy.ledger`): a forged, copied or stale one
is refused, and so is a call with no gateway baggage at all while we manage powermem (its
instrumentation is broken; billing the `.env` key silently would hide it). Otherwise the
instance picks provider, model and key; a request bound to no instance gets the `.env`'s LLM.

Answers pass through or are translated (`gateway.front.relay_answer`). Whatever happens is
written back to the request's ledger slot, which is how the proxy learns that a request's LLM
calls failed.
"""

from __future__ import annotations

import json
import logging
import time
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
    StoredKeyRejected,
    StoredKeyUnavailable,
    UnknownInstance,
)
from gateway.front.access import account
from gateway.front.exchange import BodyBroken, BodyTooLarge, Exchange
from gateway.front.relay_answer import JSON, answer_anthropic, answer_openai
from gateway.http.appkeys import LEDGER, METRICS, REGISTRY, RELAY, SETTINGS
from gateway.http.auth import bearer_matches
from gateway.proxy.baggage import gateway_members
from gateway.relay.body import parse_chat_request
from gateway.relay.relay import Relay
from gateway.relay.target import Target

__all__ = ["RelayEndpoint", "RelayRefused"]

log = logging.getLogger("gateway.relay")

CHAT_PATH = "/relay/v1/chat/completions"
MAX_BODY = 16 * 1024 * 1024
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
            slot = await self._admit(instance_id, nonce, ex.peer)
            body = await _body(ex)
            self.relay.stats.seen(instance_id, proxied=slot is not None)
            if slot is not None and self.ledger.is_probe(slot):
                # A wiring probe (`POST /gateway/probe`): answered here, no provider called,
                # and the empty fact list means powermem stores nothing.
                await self.ledger.record(slot)
                ex.respond(200, JSON, orjson.dumps(_probe_answer(body)))
                status = 200
                return
            try:
                target = await self.relay.target(instance_id)
            except GatewayError as exc:
                if slot is not None and instance_id is not None:
                    self._failed_before_the_provider(slot, instance_id, exc)
                raise
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

    async def _admit(self, instance_id: str | None, nonce: str | None, peer: str) -> int | None:
        """The ledger slot this call belongs to; None for an unproxied call that may pass."""
        if nonce is not None:
            slot = await self.ledger.admit(nonce, instance_id)
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

    def _failed_before_the_provider(self, slot: int, instance_id: str, exc: GatewayError) -> None:
        """The instance cannot make this call at all (its key no longer opens, it was deleted
        meanwhile): the request's caller learns it like any other failed LLM call."""
        unreadable = isinstance(exc, StoredKeyRejected | StoredKeyUnavailable)
        reason = "key-unreadable" if unreadable else "refused"
        self.ledger.record_call(slot, status=exc.status, reason=reason)
        if not isinstance(exc, UnknownInstance):
            self.registry.llm_failed(instance_id, exc.status, reason)

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
                usage, whole = await answer_anthropic(ex, self.relay, target, body)
            else:
                usage, whole = await answer_openai(ex, self.relay, target, body)
            status = 200
        except ProviderError as exc:
            status, reason = exc.status, reason_of(exc.status)
            raise
        except GatewayError as exc:
            # Refused on our side before the provider was reached (the base-URL policy
            # refusing the address it resolves to): not an unreachable provider.
            status, reason = exc.status, "refused"
            raise
        finally:
            failed = not whole
            if failed and status == 200:
                status, reason = 502, "bad-answer"  # a stream that broke off after its head
            elif failed and not reason:
                reason = reason_of(status)
            if slot is not None:
                await self.ledger.record(slot, status=status if failed else 0, reason=reason)
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
