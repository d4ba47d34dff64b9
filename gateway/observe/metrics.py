"""`GET /metrics` in Prometheus' text format.

Per-instance series are labelled by instance id and client label: ids are not secrets
(DESIGN.md §3.2) and keys never become labels. Each app has its own registry, so several
gateways in one process (tests, benchmarks) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "route_class"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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
        labels = ["instance_id", "client"]
        self.relay_calls = Counter(
            "powermem_gateway_relay_calls", "Relayed LLM calls per instance.", labels, registry=r
        )
        self.relay_errors = Counter(
            "powermem_gateway_relay_errors",
            "Failed relayed LLM calls per instance.",
            labels,
            registry=r,
        )
        self.relay_tokens = Counter(
            "powermem_gateway_relay_tokens",
            "Tokens used by relayed LLM calls per instance (kind: prompt or completion).",
            [*labels, "kind"],
            registry=r,
        )
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
        labels = (instance_id or "default", client)
        self.relay_latency.labels(provider).observe(seconds)
        self.relay_calls.labels(*labels).inc()
        if error:
            self.relay_errors.labels(*labels).inc()
        if tokens[0]:
            self.relay_tokens.labels(*labels, "prompt").inc(tokens[0])
        if tokens[1]:
            self.relay_tokens.labels(*labels, "completion").inc(tokens[1])
