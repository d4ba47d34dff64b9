"""One access line and one metrics observation per exchange the front serves itself.

Requests the bridge hands to the aiohttp app are logged there (its access middleware sees
the real client address); the proxy and the relay log here, with the same fields.
"""

from __future__ import annotations

import logging
import time

from gateway.front.exchange import Exchange
from gateway.observe.logs import access_log, redact
from gateway.observe.metrics import Metrics

__all__ = ["account"]


def account(
    ex: Exchange,
    *,
    route: str,
    status: int,
    started: float,
    instance_id: str | None,
    client: str | None,
    metrics: Metrics | None,
) -> None:
    elapsed = time.perf_counter() - started
    if metrics is not None:
        metrics.requests.labels(route, str(status)).inc()
        metrics.latency.labels(route).observe(elapsed)
    if access_log.isEnabledFor(logging.INFO):
        method = ex.method.decode("latin-1")
        # The path only (a query string may carry anything), redacted once here.
        path = redact(ex.target.decode("latin-1").partition("?")[0])
        access_log.info(
            "%s %s %d",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "instance_id": instance_id,
                "client": client or None,
                "remote": ex.peer,
                "route": route,
            },
        )
