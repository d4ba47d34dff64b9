"""The access middleware: one access line and one metrics observation per request.

Both go through the functions the front calls too (`gateway.observe.access.write`,
`Metrics.observe_request`), so a request is recorded the same way whichever path served it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gateway.http.appkeys import CLIENT_LABEL, INSTANCE_ID, METRICS
from gateway.observe import access
from gateway.observe.metrics import route_class

__all__ = ["access_middleware"]


@web.middleware
async def access_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Recorded after the request is fully answered, with the status the client got."""
    start = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - start
        route = route_class(request.path)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.observe_request(route, status, elapsed)
        access.write(
            request.method,
            request.path,
            status,
            round(elapsed * 1000, 2),
            request.get(INSTANCE_ID),
            request.get(CLIENT_LABEL),
            request.remote,
            route,
        )
