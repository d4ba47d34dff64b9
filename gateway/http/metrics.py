"""`GET /metrics`: the Prometheus exposition of `gateway.observe.metrics`, gzipped for a
scraper that says it accepts gzip (Prometheus does): the text grows with the instance series,
up to ~650 KB at their cap, and writing it is most of what a scrape costs."""

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
    rendered = await m.render()
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=rendered.gzipped, headers=headers)
    return web.Response(body=rendered.text, headers=headers)


def _accepts_gzip(accept: str) -> bool:
    """True unless gzip is absent or refused (`gzip;q=0`); `*` alone does not count."""
    for item in accept.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() == "gzip":
            q = params.replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
