"""`GET /metrics`: the Prometheus exposition of `gateway.observe.metrics`, gzipped for a
scraper that says it accepts gzip (Prometheus does): the text grows with the instance series,
up to ~520 KB at their cap (~20 KB gzipped), and writing it is most of what a scrape costs.

Each client address gets `SCRAPES_PER_SECOND` scrapes a second (a burst of as many); more
are refused with 429. The text is rendered at most once a second, so scraping faster gains
nothing, and a flood of scrapes (even with the admin token) cannot take the CPU from every
other client: refused twice in a row, its connections also wait a second each
(gateway.front.server.Limits.refused_hold). Prometheus scrapes every 15 s by default.
"""

from __future__ import annotations

import math

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.errors import RateLimited
from gateway.http.appkeys import METRICS, SCRAPES, UPSTREAM
from gateway.http.auth import require_admin
from gateway.policy.backoff import address_key
from gateway.policy.ratelimit import TokenBuckets

__all__ = ["SCRAPES_PER_SECOND", "routes", "scrape_limit"]

SCRAPES_PER_SECOND = 5
_ADDRESSES = 1024  # client addresses remembered (the oldest forgotten first)


def scrape_limit() -> TokenBuckets:
    return TokenBuckets(SCRAPES_PER_SECOND, 1.0, max_keys=_ADDRESSES)


routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    require_admin(request)
    if wait := request.app[SCRAPES].hit(address_key(request.remote)):
        retry = max(1, math.ceil(wait))
        raise RateLimited(
            f"At most {SCRAPES_PER_SECOND} scrapes a second per address (the metrics are "
            f"rendered once a second); retry in {retry}s.",
            details={"retry_after": retry},
            headers={"Retry-After": str(retry)},
        )
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
            name, _, value = params.replace(" ", "").partition("=")
            try:
                return name != "q" or float(value) > 0
            except ValueError:
                return True  # a malformed weight: as if there were none
    return False
