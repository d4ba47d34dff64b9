"""`/gateway/health` and `/gateway/status`: is the gateway up, and is the chain wired?"""

from __future__ import annotations

import asyncio
import secrets

import aiohttp
from aiohttp import web

from gateway import __version__
from gateway.errors import GatewayError
from gateway.http.appkeys import REGISTRY, RELAY, SETTINGS, UPSTREAM, UPSTREAM_SESSION
from gateway.http.auth import require_admin
from gateway.http.envelope import ok
from gateway.proxy.baggage import baggage_header

__all__ = ["UPSTREAM_HEALTH_PATH", "routes"]

PROBE_TIMEOUT = 30.0
PROBE_USER = "powermem-gateway-probe"

routes = web.RouteTableDef()
UPSTREAM_HEALTH_PATH = "/api/v1/system/health"


@routes.get("/gateway/health")
async def health(request: web.Request) -> web.Response:
    """The gateway itself answers (what container health checks ask)."""
    return ok({"status": "ok", "version": __version__})


async def _upstream_health(request: web.Request) -> dict[str, object]:
    upstream = request.app[UPSTREAM]
    report: dict[str, object] = {
        "mode": "external" if request.app[SETTINGS].upstream else "managed",
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
            request.app[UPSTREAM_SESSION].get(url + UPSTREAM_HEALTH_PATH) as response,
        ):
            report["healthy"] = response.status == 200
            report["status"] = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        report |= {"healthy": False, "error": type(exc).__name__}
    return report


@routes.get("/gateway/status")
async def status(request: web.Request) -> web.Response:
    """Upstream health, what the relay has seen, how many instances exist; never a key."""
    relay = request.app[RELAY]
    stats = relay.stats
    return ok(
        {
            "version": __version__,
            "upstream": await _upstream_health(request),
            "relay": {
                "url": request.app[SETTINGS].relay_url,
                "default_llm": relay.default_llm,
                "calls": stats.calls,
                "instance_calls": stats.instance_calls,
                "last_call_at": stats.last_call_at,
                "last_instance_call_at": stats.last_instance_call_at,
            },
            "instances": len(await request.app[REGISTRY].list()),
        }
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
                    **request.app[UPSTREAM].own_headers,  # powermem's API key, if its auth is on
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
    return ok({"wired": wired, "detail": detail, "upstream_status": upstream_status})
