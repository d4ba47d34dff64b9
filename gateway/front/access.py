"""One access line and one metrics observation per exchange the front serves itself.

Requests the bridge hands to the aiohttp app are logged there (its access middleware sees
the real client address); the proxy and the relay log here, through the same two calls
(`gateway.observe.access.write`, `Metrics.observe_request`), with the same fields.
"""

from __future__ import annotations

import time

from gateway.front.exchange import Exchange
from gateway.observe import access
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
        metrics.observe_request(route, status, elapsed)
    # The path only (a query string may carry anything); access.write redacts it.
    access.write(
        ex.method.decode("latin-1"),
        ex.target.decode("latin-1").partition("?")[0],
        status,
        round(elapsed * 1000, 2),
        instance_id,
        client,
        ex.peer,
        route,
    )
