"""Typed application keys shared by the gateway's modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.instances.registry import Registry
    from gateway.ratelimit import InstanceRateLimiter
    from gateway.relay.relay import Relay
    from gateway.upstream import Upstream

__all__ = ["RATE_LIMITER", "REGISTRY", "RELAY", "SETTINGS", "UPSTREAM", "UPSTREAM_SESSION"]

SETTINGS = web.AppKey("settings", Settings)
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
UPSTREAM: web.AppKey[Upstream] = web.AppKey("upstream")
UPSTREAM_SESSION = web.AppKey("upstream_session", aiohttp.ClientSession)
RELAY: web.AppKey[Relay] = web.AppKey("relay")
RATE_LIMITER: web.AppKey[InstanceRateLimiter] = web.AppKey("rate_limiter")
