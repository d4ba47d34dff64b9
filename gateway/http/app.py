"""The application factory: routes, middleware, and the resources the app owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.errors import StorageError
from gateway.http.access import access_middleware
from gateway.http.appkeys import (
    ADMIN,
    LEDGER,
    METRICS,
    REGISTRY,
    RELAY,
    RUNTIME,
    SCRAPES,
    SETTINGS,
    UPSTREAM,
    UPSTREAM_POOLS,
    UPSTREAM_SESSION,
)
from gateway.http.envelope import error_middleware
from gateway.http.gate import AdminGate
from gateway.http.instances import routes as instance_routes
from gateway.http.metrics import routes as metrics_routes
from gateway.http.metrics import scrape_limit
from gateway.http.openapi import routes as openapi_routes
from gateway.http.peer import peer_middleware
from gateway.http.ready import READINESS, Readiness
from gateway.http.ready import routes as ready_routes
from gateway.http.status import UPSTREAM_HEALTH, UpstreamHealth
from gateway.http.status import routes as status_routes
from gateway.instances.registry import Registry
from gateway.observe.logs import remember_secret
from gateway.observe.metrics import Metrics
from gateway.policy.ratelimit import RateLimits
from gateway.proxy.cluster import ClusterLedger, replica_id
from gateway.proxy.ledger import LEDGER_FILE, Ledger
from gateway.proxy.pools import UpstreamPools
from gateway.proxy.upstream import SharedUpstream, StaticUpstream
from gateway.proxy.upstream_env import (
    client_rate_limit,
    default_llm,
    own_headers,
    read_env_file,
)
from gateway.relay.client import ProviderPool
from gateway.relay.relay import Relay
from gateway.runtime import Runtime
from gateway.settings import Settings
from gateway.tokens import load_admin_token, load_relay_token
from gateway.ui.guard import ui_ctx
from gateway.ui.routes import routes as ui_routes

__all__ = ["create_app"]

log = logging.getLogger("gateway")
HOUSEKEEPING_INTERVAL = 1.0


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # powermem's own per-client limit (its .env) is applied here, per client address: behind
    # the gateway powermem sees one client, us (issue 11.7).
    limits = RateLimits(
        instance_per_minute=settings.instance_rate_limit,
        client_per_minute=client_rate_limit(read_env_file(settings.env_file)),
        registrations_per_hour=settings.new_instances_per_client_per_hour,
        # With Redis these hold across every replica (gateway.policy.shared_limits).
        redis_url=settings.redis_url,
    )
    registry = await Registry.open(settings, limits=limits)
    app[REGISTRY] = registry
    task = asyncio.create_task(_housekeeping(registry))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await registry.close()
    await limits.close()


async def _housekeeping(registry: Registry) -> None:
    """instances.yaml edits, usage counters, expired instances: about once a second."""
    said = ""
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        try:
            await registry.housekeeping()
            said = ""
        except StorageError as exc:
            # The registry is unreachable: one line when that changes, not one a second.
            if exc.message != said:
                log.warning("registry housekeeping: %s; will retry", exc.message)
                said = exc.message
        except Exception:
            log.exception("registry housekeeping failed; will retry")


async def _relay_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = ProviderPool(
        timeout=settings.provider_timeout,
        retries=settings.provider_retries,
        deadline=settings.relay_deadline,
        # The same policy the registry applies at registration, now at call time.
        policy=app[REGISTRY].url_policy,
    )
    app[RELAY] = Relay(
        token=load_relay_token(settings),
        registry=app[REGISTRY],
        pool=pool,
        default=default_llm(read_env_file(settings.env_file)),
    )
    yield
    await pool.close()


async def _front_ctx(app: web.Application) -> AsyncIterator[None]:
    """What the front's proxy needs: the request ledger and the pools to powermem.

    The workers of one `serve` share one ledger file: powermem's LLM call for a request may
    reach the relay in any of them."""
    settings = app[SETTINGS]
    runtime = app[RUNTIME]
    # Replicas on one registry: a relay call may reach another replica (gateway.proxy.cluster).
    kind = ClusterLedger if settings.database_url else Ledger
    if runtime.run_dir is not None:
        ledger = kind.shared(
            runtime.run_dir / LEDGER_FILE, worker=runtime.worker, workers=runtime.workers
        )
    else:
        ledger = kind.anonymous()
    app[LEDGER] = ledger
    if isinstance(ledger, ClusterLedger) and settings.database_url:
        ledger.join(settings.database_url, replica_id(runtime.run_dir))
        await ledger.start()
    pools = UpstreamPools(connect_timeout=settings.upstream_connect_timeout)
    app[UPSTREAM_POOLS] = pools
    yield
    await pools.close()
    if isinstance(ledger, ClusterLedger) and settings.database_url:
        await ledger.stop()
    ledger.close()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # One pooled session for every proxied request. Bodies pass through as they are,
    # compressed or not, so the client decodes what powermem encoded.
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None, connect=settings.upstream_connect_timeout, sock_read=None
        ),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        connector=aiohttp.TCPConnector(limit=256),
        trust_env=False,
    ) as session:
        app[UPSTREAM_SESSION] = session
        runtime = app[RUNTIME]
        if settings.upstream is not None:
            env = read_env_file(settings.env_file)
            app[UPSTREAM] = StaticUpstream(settings.upstream, own_headers=own_headers(env))
            yield
            return
        if runtime.run_dir is not None:
            # `serve`'s supervisor owns the managed powermem and publishes where it is.
            shared = SharedUpstream(
                runtime.run_dir, own_headers=own_headers(read_env_file(settings.env_file))
            )
            app[UPSTREAM] = shared
            try:
                yield
            finally:
                shared.close()
            return
        from gateway.proxy.managed import ManagedUpstream  # only serve-without---upstream needs it

        managed = ManagedUpstream(
            settings, relay_token=app[RELAY].token, env=read_env_file(settings.env_file)
        )
        app[UPSTREAM] = managed
        await managed.start()
        try:
            yield
        finally:
            await managed.stop()


def create_app(settings: Settings, runtime: Runtime | None = None) -> web.Application:
    """The gateway's aiohttp app. Without `runtime` it runs its own managed powermem."""
    app = web.Application(
        # The bridged client's address first; access logging outside error mapping, so it
        # sees the status the client gets.
        middlewares=[peer_middleware, access_middleware, error_middleware],
        handler_args={"max_field_size": 32768},
    )
    app[SETTINGS] = settings
    # Closed by default: with no token configured, one is generated into the data dir.
    app[ADMIN] = AdminGate(load_admin_token(settings))
    app[RUNTIME] = runtime or Runtime()
    app[READINESS] = Readiness()
    # Whatever shape these have, no log line will show them (see gateway.observe.logs).
    for secret in (
        app[ADMIN].token,
        settings.secret,
        settings.relay_token,
        *settings.previous_secrets,
    ):
        remember_secret(secret)
    app[METRICS] = Metrics()
    app[SCRAPES] = scrape_limit()
    app[UPSTREAM_HEALTH] = UpstreamHealth()
    app.cleanup_ctx.append(_registry_ctx)
    app.cleanup_ctx.append(_relay_ctx)
    app.cleanup_ctx.append(_upstream_ctx)
    app.cleanup_ctx.append(_front_ctx)
    app.cleanup_ctx.append(ui_ctx)
    app.add_routes(instance_routes)
    app.add_routes(status_routes)
    app.add_routes(ready_routes)
    app.add_routes(metrics_routes)
    app.add_routes(openapi_routes)
    app.add_routes(ui_routes)
    return app
