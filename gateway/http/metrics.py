"""`GET /metrics`: the Prometheus exposition of `gateway.observe.metrics`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.http.appkeys import METRICS, UPSTREAM
from gateway.http.auth import require_admin

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    require_admin(request)
    m = request.app[METRICS]
    m.upstream_restarts.set(getattr(request.app.get(UPSTREAM), "restarts", 0))
    return web.Response(body=await m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
