"""Typed application keys shared by the gateway's modules."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.http.gate import AdminGate
from gateway.instances.registry import Registry
from gateway.observe.metrics import Metrics
from gateway.policy.ratelimit import TokenBuckets
from gateway.proxy.ledger import Ledger
from gateway.proxy.pools import UpstreamPools
from gateway.proxy.upstream import Upstream
from gateway.relay.relay import Relay
from gateway.runtime import Runtime
from gateway.settings import Settings

__all__ = [
    "ADMIN",
    "CLIENT_LABEL",
    "INSTANCE_ID",
    "LEDGER",
    "METRICS",
    "REGISTRY",
    "RELAY",
    "RUNTIME",
    "SCRAPES",
    "SETTINGS",
    "UPSTREAM",
    "UPSTREAM_POOLS",
    "UPSTREAM_SESSION",
]

SETTINGS = web.AppKey("settings", Settings)
ADMIN = web.AppKey("admin", AdminGate)
# Which worker of how many, and the run dir they share (gateway.runtime).
RUNTIME = web.AppKey("runtime", Runtime)
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
UPSTREAM_POOLS = web.AppKey("upstream_pools", UpstreamPools)
LEDGER = web.AppKey("ledger", Ledger)
RELAY: web.AppKey[Relay] = web.AppKey("relay")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# Scrapes of /metrics per client address (gateway.http.metrics.SCRAPES_PER_SECOND).
SCRAPES = web.AppKey("scrapes", TokenBuckets)

# Per-request: which instance and client a request served, for the access log.
INSTANCE_ID = web.RequestKey("instance_id", str)
CLIENT_LABEL = web.RequestKey("client", str)
