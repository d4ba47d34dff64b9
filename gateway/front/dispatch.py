"""Every exchange starts here: the front door, then one of three handlers.

1. the request target is read (origin-form; absolute-form for one of our host names;
   `OPTIONS *`, answered here), and the front door checks `Host`, `Origin` and our headers;
2. CORS preflights are answered here;
3. the path decides: the gateway's own routes go over the bridge to the aiohttp app, the relay
   is served natively, everything else is proxied to powermem.
Errors become the answer in the caller's shape: powermem's envelope, OpenAI's on the relay.
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import urlsplit

from gateway.errors import BadRequest, GatewayError, MethodNotAllowed
from gateway.front.bridge import Bridge
from gateway.front.door import PREFLIGHT_METHODS, Door, HostRefused
from gateway.front.exchange import Exchange
from gateway.front.paths import PathError, route
from gateway.front.proxy import PowermemProxy
from gateway.front.server import answer
from gateway.wire.heads import find

__all__ = ["Dispatcher", "RelayHandler"]

ALLOWED_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
# What a preflight may ask for in Access-Control-Request-Headers: a list of header names.
_TOKEN_LIST = re.compile(rb"[A-Za-z0-9_\-]+(?:\s*,\s*[A-Za-z0-9_\-]+)*")


class RelayHandler(Protocol):
    """What serves `/relay/…` (the native relay, see `gateway.front.relay`)."""

    async def handle(self, ex: Exchange, path: str) -> None: ...


class Dispatcher:
    def __init__(self, door: Door, bridge: Bridge, proxy: PowermemProxy, relay: RelayHandler):
        self.door = door
        self.bridge = bridge
        self.proxy = proxy
        self.relay = relay

    async def __call__(self, ex: Exchange) -> None:
        openai_shape = False
        try:
            target = self._origin_form(ex)
            admission = self.door.admit(ex.method, ex.headers)
            ex.cors_origin = admission.cors_origin
            if admission.preflight:
                _preflight(ex)
                return
            if target == "*":
                # `OPTIONS *` asks about the server itself: no resource of powermem's to ask.
                ex.respond(204, [(b"Allow", ALLOWED_METHODS)])
                return
            where = route(target)
            openai_shape = where.kind == "relay"
            if where.scope is not None and where.kind != "proxy":
                # A scoped URL names its instance on every route: one that is unknown,
                # deleted or (shared) unproven is refused, never served as if unscoped.
                await self.proxy.check_scope(ex, where.scope)
            if where.kind == "own":
                await self.bridge.handle(ex, where)
            elif where.kind == "relay":
                await self.relay.handle(ex, where.path)
            else:
                await self.proxy.handle(ex, where)
        except PathError as exc:
            answer(ex, BadRequest(f"Bad request path: {exc}."))
        except GatewayError as exc:
            answer(ex, exc, openai_shape=openai_shape)

    def _origin_form(self, ex: Exchange) -> str:
        try:
            target = ex.target.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(
                "The request target must be ASCII (percent-encode the rest)."
            ) from None
        if ex.method == b"CONNECT":
            raise MethodNotAllowed("CONNECT is not supported: this is not a forward proxy.")
        if target.startswith("/"):
            return target
        if target == "*" and ex.method == b"OPTIONS":
            return target
        parts = urlsplit(target)
        if parts.scheme in ("http", "https") and parts.netloc:
            if not self.door.host_allowed(parts.netloc):
                raise HostRefused(
                    f"This gateway does not answer to the host {parts.netloc[:100]!r}.",
                    details={"host": parts.netloc[:100]},
                )
            return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raise BadRequest("The request target must be a path such as /api/v1/memories.")


def _preflight(ex: Exchange) -> None:
    requested = find(ex.headers, b"access-control-request-headers") or b""
    headers = [
        (b"access-control-allow-methods", PREFLIGHT_METHODS),
        (b"access-control-max-age", b"600"),
    ]
    if requested and _TOKEN_LIST.fullmatch(requested):
        headers.append((b"access-control-allow-headers", requested))
    ex.respond(204, [], cors=headers)
