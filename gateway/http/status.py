"""`/gateway/health`, `/gateway/status` and `/gateway/probe`: is the gateway up, is the chain wired?

`/gateway/status` is cheap whatever the load: the instance count is one SQL count off the
event loop, and powermem's health is asked at most once per `HEALTH_TTL` however many callers
ask meanwhile (a flood of status calls must not become a flood on powermem, which answers
one request at a time). Without the admin token it shows only the version and whether the
chain is healthy: the upstream's address and the relay's activity are for the operator.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.errors import GatewayError
from gateway.http.appkeys import REGISTRY, RELAY, SETTINGS, UPSTREAM, UPSTREAM_SESSION
from gateway.http.auth import admin_presented, require_admin
from gateway.http.envelope import ok
from gateway.http.shapes import Health, ProbeResult, Status
from gateway.proxy.baggage import baggage_header

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
                "instance_calls": stats.instance_calls,
                "last_call_at": stats.last_call_at,
                "last_instance_call_at": stats.last_instance_call_at,
            },
            instances=await app[REGISTRY].total(),
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
    probe_id = f"probe-{secrets.token_hex(8)}"
    landed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    relay.probes[probe_id] = landed
    upstream_status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with request.app[UPSTREAM_SESSION].post(
                request.app[UPSTREAM].url + "/api/v1/memories",
                json={"content": "powermem-gateway wiring probe", "user_id": PROBE_USER},
                # The shared upstream session adds no Content-Type of its own (see app.py).
                headers={
                    "baggage": baggage_header(probe_id),
                    "Content-Type": "application/json",
                },
            ) as response:
                upstream_status = response.status
                await response.read()
            wired = landed.done()
    except (aiohttp.ClientError, TimeoutError) as exc:
        wired, error = landed.done(), type(exc).__name__
    finally:
        del relay.probes[probe_id]
    if wired:
        detail = "powermem's LLM call reached the relay with the request's baggage."
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
