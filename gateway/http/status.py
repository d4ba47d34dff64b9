"""`/gateway/health`, `/gateway/status` and `/gateway/probe`: is the gateway up, is the chain wired?

`/gateway/status` is cheap whatever the load: the instance count is one SQL count off the
event loop, and powermem's health is asked at most once per `HEALTH_TTL` however many callers
ask meanwhile (a flood of status calls must not become a flood on powermem, which answers
one request at a time). Without the admin token it shows only the version and whether the
chain is healthy: the upstream's address and the relay's activity are for the operator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.errors import GatewayError, InvalidConfig, ProviderError
from gateway.http.appkeys import LEDGER, REGISTRY, RELAY, SETTINGS, UPSTREAM, UPSTREAM_SESSION
from gateway.http.auth import admin_presented, require_admin
from gateway.http.envelope import ok
from gateway.http.shapes import Health, ProbeResult, ProviderProbe, Status
from gateway.instances.model import INSTANCE_ID_RE
from gateway.proxy.baggage import baggage_header
from gateway.relay.anthropic import to_anthropic_request

__all__ = ["HEALTH_TTL", "UPSTREAM_HEALTH", "UPSTREAM_HEALTH_PATH", "UpstreamHealth", "routes"]

PROBE_TIMEOUT = 30.0
PROBE_USER = "powermem-gateway-probe"
HEALTH_TTL = 1.0

routes = web.RouteTableDef()
UPSTREAM_HEALTH_PATH = "/api/v1/system/health"


@routes.get("/gateway/health")
async def health(request: web.Request) -> web.Response:
    """The gateway itself answers (what container health checks ask)."""
    return ok(Health(status="ok", version=__version__))


class UpstreamHealth:
    """powermem's health, asked at most once per `HEALTH_TTL` (callers meanwhile share it)."""

    def __init__(self) -> None:
        self._report: dict[str, Any] | None = None
        self._at = 0.0
        self._pending: asyncio.Future[dict[str, Any]] | None = None

    async def get(self, app: web.Application) -> dict[str, Any]:
        if self._report is not None and time.monotonic() - self._at < HEALTH_TTL:
            return self._report
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ask(app))
            self._pending.add_done_callback(self._done)
        return await asyncio.shield(self._pending)

    def _done(self, pending: asyncio.Future[dict[str, Any]]) -> None:
        self._pending = None
        if not pending.cancelled() and pending.exception() is None:
            self._report, self._at = pending.result(), time.monotonic()

    @staticmethod
    async def _ask(app: web.Application) -> dict[str, Any]:
        upstream = app[UPSTREAM]
        report: dict[str, Any] = {
            "mode": "external" if app[SETTINGS].upstream else "managed",
            "restarts": getattr(upstream, "restarts", 0),
        }
        try:
            url = upstream.url
        except GatewayError as exc:
            return report | {"healthy": False, "error": exc.message}
        report["url"] = url
        try:
            async with (
                asyncio.timeout(5),
                app[UPSTREAM_SESSION].get(url + UPSTREAM_HEALTH_PATH) as response,
            ):
                report["healthy"] = response.status == 200
                report["status"] = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            report |= {"healthy": False, "error": type(exc).__name__}
        return report


UPSTREAM_HEALTH = web.AppKey("upstream_health", UpstreamHealth)


@routes.get("/gateway/status")
async def status(request: web.Request) -> web.Response:
    """Health for anyone; with the admin token also upstream, relay and instance count."""
    admin = admin_presented(request)
    if admin:
        require_admin(request)
    app = request.app
    upstream = await app[UPSTREAM_HEALTH].get(app)
    if not admin:
        return ok(Status(version=__version__, healthy=bool(upstream.get("healthy"))))
    relay = app[RELAY]
    stats = relay.stats
    return ok(
        Status(
            version=__version__,
            healthy=bool(upstream.get("healthy")),
            upstream=upstream,
            relay={
                "url": app[SETTINGS].relay_url,
                "default_llm": relay.default_llm,
                "calls": stats.calls,
                "proxied_calls": stats.proxied_calls,
                "instance_calls": stats.instance_calls,
                "refused_without_baggage": stats.unproxied,
                "last_call_at": stats.last_call_at,
                "last_instance_call_at": stats.last_instance_call_at,
            },
            # Counted by SQL, not by loading every row (issue 12.2).
            instances=await app[REGISTRY].total(),
            instances_file_problems=app[REGISTRY].file_problems,
        )
    )


@routes.post("/gateway/probe")
async def probe(request: web.Request) -> web.Response:
    """Prove that powermem's LLM calls reach this relay, carrying the request's baggage.

    Adds a memory with inference under a one-off probe id; the relay answers that call itself
    (no provider, no facts, so nothing is stored). Wired means the call arrived in time.
    """
    require_admin(request)
    relay = request.app[RELAY]
    ledger = request.app[LEDGER]
    entry = ledger.issue(None, probe=True)
    if entry is None:
        raise GatewayError("Too many requests in flight to run the probe now; retry shortly.")
    unproxied = relay.stats.unproxied
    upstream_status: int | None = None
    error: str | None = None
    wired = False
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with request.app[UPSTREAM_SESSION].post(
                request.app[UPSTREAM].url + "/api/v1/memories",
                json={"content": "powermem-gateway wiring probe", "user_id": PROBE_USER},
                # The shared upstream session adds no Content-Type of its own (see app.py).
                headers={
                    **request.app[UPSTREAM].own_headers,  # powermem's API key, if its auth is on
                    "baggage": baggage_header(None, entry.nonce),
                    "Content-Type": "application/json",
                },
            ) as response:
                upstream_status = response.status
                await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = type(exc).__name__
    finally:
        wired = ledger.release(entry).calls > 0
    if wired:
        detail = "powermem's LLM call reached the relay with the request's baggage."
    elif relay.stats.unproxied > unproxied:
        detail = (
            "powermem's LLM call reached the relay without the request's baggage: it runs "
            "without opentelemetry-instrument or without the baggage propagator (see "
            "`powermem-gateway upstream-env`); such calls are refused, never billed to the .env."
        )
    elif error:
        detail = f"the probe request to powermem failed ({error})."
    elif upstream_status is not None and upstream_status >= 400:
        detail = f"powermem refused the probe request ({upstream_status}); check its log."
    else:
        detail = (
            f"powermem answered {upstream_status} without calling the relay: its LLM is not "
            "pointed at the relay, or it runs without opentelemetry-instrument / baggage "
            "propagation (see `powermem-gateway upstream-env`)."
        )
    return ok(ProbeResult(wired=wired, detail=detail, upstream_status=upstream_status))


@routes.post("/gateway/probe/{instance_id}")
async def probe_provider(request: web.Request) -> web.Response:
    """A one-token call to one instance's provider, with its key (what `doctor
    --probe-providers` asks). Admin only: it spends a little of the instance's quota."""
    require_admin(request)
    instance_id = request.match_info["instance_id"]
    if not INSTANCE_ID_RE.match(instance_id):
        raise InvalidConfig(
            "instance id must look like pmem-0123456789abcdef.", details={"field": "instance_id"}
        )
    relay = request.app[RELAY]
    target = await relay.target(instance_id)
    body = {
        "model": target.model,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }
    if target.spec.wire == "anthropic":
        body = to_anthropic_request(body, model=target.model)
    try:
        answer = await relay.pool.post(target, body)
        answer.release()
    except ProviderError as exc:
        return ok(ProviderProbe(ok=False, status=exc.status, detail=exc.message))
    return ok(ProviderProbe(ok=True, status=answer.status, detail="the provider answered"))
