"""One access line and one metrics observation per exchange the front serves itself.

Requests the bridge hands to the aiohttp app are logged there (its access middleware sees
the real client address); the proxy and the relay log here, with the same fields.
"""

from __future__ import annotations

import logging
import re
import time

from gateway.front.exchange import Exchange
from gateway.observe.logs import access_log, redact
from gateway.observe.metrics import Metrics

__all__ = ["account"]

# The secret of an instance-scoped URL, `/i/<id>~<secret>/…` (the `~` possibly encoded).
_SCOPE_SECRET = re.compile(r"(/i/[^/?]*?(?:~|%7e))[^/?]*", re.IGNORECASE)


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
        # The path only (a query string may carry anything), redacted once here; a scoped
        # URL's secret is masked (the id stays: it is what the line is for).
        path = ex.target.decode("latin-1").partition("?")[0]
        path = redact(_SCOPE_SECRET.sub(r"\1[redacted]", path))
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
