"""`/gateway/ready`: 200 only once the registry answers and powermem's memory service works.

The registry comes first: a replica whose PostgreSQL registry cannot be reached refuses bound
requests, so a load balancer should stop sending it traffic until it is back.

powermem's health route answers 200 as soon as its web server runs, even when its memory
service could not be built (storage unreachable, a package missing, a bad `.env`); every
memory call then answers 503. Readiness asks what a client would: a one-row memory listing,
with powermem's API key when its auth is on. A positive answer is remembered per upstream
URL for `READY_TTL` seconds (a restarted managed powermem gets a new port, so a new check).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from gateway.errors import GatewayError, NotReady, StorageError
from gateway.http.appkeys import REGISTRY, SETTINGS, UPSTREAM, UPSTREAM_SESSION
from gateway.http.envelope import ok

__all__ = ["READINESS", "READY_CHECK_PATH", "READY_PATH", "Readiness", "check_ready", "routes"]

READY_PATH = "/gateway/ready"
READY_CHECK_PATH = "/api/v1/memories?user_id=powermem-gateway-ready&limit=1"
READY_TTL = 30.0
CHECK_TIMEOUT = 10.0

routes = web.RouteTableDef()


class Readiness:
    """Which upstream URLs answered a memory call, and until when that counts."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def known_ready(self, url: str) -> bool:
        return self._until.get(url, 0.0) > time.monotonic()

    def remember(self, url: str) -> None:
        self._until = {url: time.monotonic() + READY_TTL}


READINESS = web.AppKey("readiness", Readiness)


def _reason(status: int, body: str) -> str:
    if status == 503:
        return (
            "powermem's memory service is not working: its storage or embedder could not be "
            "built. See powermem's log (upstream.log in the gateway's data dir, or the "
            "server's own) and check DATABASE_PROVIDER / EMBEDDING_PROVIDER in its .env; "
            "`powermem-gateway doctor` names the cause."
        )
    if status in (401, 403):
        return (
            "powermem refused the gateway's call: its API-key auth is on. Put its key in "
            "POWERMEM_SERVER_API_KEYS (with POWERMEM_SERVER_AUTH_ENABLED=true) in the .env "
            "the gateway reads (--env-file)."
        )
    return f"powermem answered HTTP {status} to a memory listing: {body[:200]}"


@routes.get(READY_PATH)
async def ready(request: web.Request) -> web.Response:
    """200 when the registry's database answers and a memory call through to powermem works;
    503 with the reason otherwise."""
    database = await check_database(request.app)
    return ok({"ready": True, "upstream": await check_ready(request.app), "database": database})


async def check_database(app: web.Application) -> dict[str, object]:
    """The registry's database health; `NotReady` (with Retry-After) when it does not answer."""
    try:
        health: dict[str, object] = await app[REGISTRY].database_health()
    except StorageError as exc:
        raise NotReady(
            exc.message,
            headers={"Retry-After": exc.headers.get("Retry-After", "2")},
            details={"database": app[REGISTRY].database, "reachable": False},
        ) from None
    return health


async def check_ready(app: web.Application) -> str:
    """The upstream's mode when a memory call through to powermem works; `NotReady` if not.

    What `/gateway/ready` answers, and what the UI shows."""
    upstream = app[UPSTREAM]
    readiness = app[READINESS]
    mode = "external" if app[SETTINGS].upstream else "managed"
    try:
        url = upstream.url
    except GatewayError as exc:
        raise NotReady(exc.message, headers=exc.headers, details={"upstream": mode}) from None
    if not readiness.known_ready(url):
        try:
            async with (
                asyncio.timeout(CHECK_TIMEOUT),
                app[UPSTREAM_SESSION].get(
                    url + READY_CHECK_PATH, headers=dict(upstream.own_headers)
                ) as response,
            ):
                status, body = response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotReady(
                f"cannot reach powermem at {url} ({type(exc).__name__}).",
                headers={"Retry-After": "2"},
                details={"upstream": mode},
            ) from None
        if status != 200:
            raise NotReady(
                _reason(status, body),
                headers={"Retry-After": "5"},
                details={"upstream": mode, "upstream_status": status},
            )
        readiness.remember(url)
    return mode
