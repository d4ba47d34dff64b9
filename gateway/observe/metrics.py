"""The gateway's Prometheus metrics: bounded series, pre-bound on the hot path, cheap to render.

Per-instance series are labelled by instance id and client label (ids are not secrets, and
`/metrics` needs the admin token); keys never become labels. Every label set is bounded:
route classes and providers are fixed lists, statuses are the few the gateway answers (any
other is `other`), and at most `MAX_INSTANCES` instance label sets exist; later instances
are counted under `instance_id="other", client="other"`, so a flood of instances cannot grow
`/metrics` without end (issue 12.1). Those are plain numbers written as text by
`gateway.observe.instance_series`; the other children are looked up once and kept (issue 14:
no `labels()` on the hot path). Rendering runs off the event loop, at most once per
`RENDER_TTL` (a flood of scrapes shares one rendering), gzipped in the same thread for
scrapers that accept it, as Prometheus does. No `_created` series: they doubled the text (one
timestamp per counter child) and Prometheus does not need them.
Each app has its own registry, so several gateways in one process (tests, benchmarks) never
share counters.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from gateway.observe.instance_series import (
    CALLS,
    COMPLETION,
    ERRORS,
    LLM_ERRORS,
    PROMPT,
    InstanceSeries,
)
from gateway.providers import PROVIDERS

__all__ = [
    "MAX_INSTANCES",
    "OVERFLOW",
    "RENDER_TTL",
    "ROUTES",
    "Exposition",
    "Metrics",
    "route_class",
]

# A process-wide switch in prometheus_client; the gateway's processes have no other registry.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ROUTES = ("instances", "relay", "gateway", "proxy")
_STATUSES = frozenset(
    (200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 409, 413, 415)
) | frozenset((422, 429, 431, 499, 500, 502, 503, 504))
MAX_INSTANCES = 1000
OVERFLOW = "other"
RENDER_TTL = 1.0


@dataclass(frozen=True, slots=True)
class Exposition:
    """One rendering, plain and gzipped (level 1 at the cap: 520 KB to 19 KB in under 1 ms)."""

    text: bytes = b""
    gzipped: bytes = b""

    @classmethod
    def of(cls, text: bytes) -> Exposition:
        return cls(text, gzip.compress(text, compresslevel=1, mtime=0))


def route_class(path: str) -> str:
    """A small, fixed label set: paths themselves would explode the series count."""
    if path.startswith("/api/v1/instances"):
        return "instances"
    if path.startswith("/relay/"):
        return "relay"
    if path.startswith("/gateway/") or path == "/metrics":
        return "gateway"
    return "proxy"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "powermem_gateway_requests",
            "Requests answered, by route class and status code.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "powermem_gateway_request_duration_seconds",
            "Time to answer a request in full (streams included), by route class.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.relay_latency = Histogram(
            "powermem_gateway_relay_provider_duration_seconds",
            "Time of one relayed LLM call, by provider.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.instances = InstanceSeries()
        self.relay_refused = Counter(
            "powermem_gateway_relay_refused",
            "Relay calls refused: no gateway baggage, or a nonce of no request in flight.",
            ["reason"],
            registry=r,
        )
        self.upstream_restarts = Gauge(
            "powermem_gateway_upstream_restarts",
            "Times the managed powermem server was restarted since the gateway started.",
            registry=r,
        )
        # Children bound once: on first use for route × status (a series appears when it
        # happens), now for the route latencies and providers, as seen for instances.
        self._requests: dict[tuple[str, int | str], Any] = {}
        self._latency = {route: self.latency.labels(route) for route in ROUTES}
        self._providers = {name: self.relay_latency.labels(name) for name in PROVIDERS}
        self._rendered = Exposition()
        self._rendered_at = -RENDER_TTL
        self._rendering: asyncio.Future[Exposition] | None = None

    # -- the hot path ---------------------------------------------------------------------------

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """One answered request: two dict lookups and two increments."""
        if route not in self._latency:
            route = "proxy"
        key = (route, status if status in _STATUSES else OVERFLOW)
        counter = self._requests.get(key)
        if counter is None:  # at most len(ROUTES) × (len(_STATUSES) + 1) of these
            counter = self._requests[key] = self.requests.labels(route, str(key[1]))
        counter.inc()
        self._latency[route].observe(seconds)

    def _instance(self, instance_id: str | None, client: str) -> list[Any]:
        key = (instance_id or "default", client)
        found = self.instances.get(key)
        if found is None:
            if len(self.instances) >= MAX_INSTANCES:
                key = (OVERFLOW, OVERFLOW)
                found = self.instances.get(key)
            if found is None:
                found = self.instances.add(key)
        return found

    def relay_call(
        self,
        *,
        instance_id: str | None,
        client: str,
        provider: str,
        seconds: float,
        error: bool,
        tokens: tuple[int, int] = (0, 0),
    ) -> None:
        row = self._instance(instance_id, client)
        latency = self._providers.get(provider)
        if latency is not None:
            latency.observe(seconds)
        row[CALLS] += 1
        if error:
            row[ERRORS] += 1
        row[PROMPT] += tokens[0]
        row[COMPLETION] += tokens[1]

    def llm_error(self, instance_id: str | None, client: str) -> None:
        """A provider refused or failed an LLM call made for this instance."""
        self._instance(instance_id, client)[LLM_ERRORS] += 1

    @property
    def instance_series(self) -> int:
        """How many instance label sets exist (at most MAX_INSTANCES + the overflow one)."""
        return len(self.instances)

    # -- the scrape -----------------------------------------------------------------------------

    async def render(self) -> Exposition:
        """The exposition, rendered in a thread at most once per RENDER_TTL."""
        if time.monotonic() - self._rendered_at < RENDER_TTL:
            return self._rendered
        if self._rendering is None:
            self._rendering = asyncio.ensure_future(
                asyncio.to_thread(lambda: Exposition.of(self.text()))
            )
            self._rendering.add_done_callback(self._rendered_now)
        return await asyncio.shield(self._rendering)

    def text(self) -> bytes:
        """The exposition text: prometheus_client's families, then the per-instance ones."""
        return generate_latest(self.registry) + self.instances.text().encode()

    def _rendered_now(self, done: asyncio.Future[Exposition]) -> None:
        self._rendering = None
        if not done.cancelled() and done.exception() is None:
            self._rendered, self._rendered_at = done.result(), time.monotonic()
