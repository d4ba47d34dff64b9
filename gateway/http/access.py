"""The access middleware: one log line and one metrics observation per request."""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from gateway.http.appkeys import CLIENT_LABEL, INSTANCE_ID, METRICS
from gateway.observe.logs import access_log, redact
from gateway.observe.metrics import route_class

__all__ = ["access_middleware"]


@web.middleware
async def access_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """One log line and one metrics observation per request, after it is fully answered."""
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
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            instance = request.get(INSTANCE_ID)
            # The path only (a query string may carry anything), redacted here once: the
            # formatters trust access lines and skip their own scan.
            path = redact(request.path)
            access_log.info(
                "%s %s %d",
                request.method,
                path,
                status,
                extra={
                    "method": request.method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "instance_id": instance,
                    "client": request.get(CLIENT_LABEL) or None,
                    "remote": request.remote,
                    "route": route,
                },
            )
