"""Every path that is not the gateway's own goes to powermem, bound to its instance.

For each request: bind it (scoped URL, `X-PowerMem-Instance`, or LLM headers; see
`gateway.proxy.binding`), take a ledger slot, rewrite the head — our headers and the
client's baggage out; `baggage` with our instance and nonce, `X-Forwarded-*` in — and stream
it through the upstream pools. On the way back the answer gets `X-PowerMem-Instance`, and
`X-PowerMem-LLM-Error` when the request's LLM calls failed; a scoped URL's prefix is put back
into `Location`, so a redirect (powermem's `/mcp/` → `/mcp`) stays inside the scope.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from gateway.errors import GatewayError, RateLimited
from gateway.front.access import account
from gateway.front.exchange import Exchange
from gateway.front.forward import forward
from gateway.front.paths import Route
from gateway.http.appkeys import (
    LEDGER,
    METRICS,
    REGISTRY,
    SETTINGS,
    UPSTREAM,
    UPSTREAM_POOLS,
)
from gateway.proxy.baggage import baggage_header
from gateway.proxy.binding import Binding, bind, powermem_headers
from gateway.proxy.ledger import Entry, Ledger
from gateway.proxy.mcp import SESSION_HEADER, McpSessions, is_mcp
from gateway.wire.heads import HOP_BY_HOP, Header, connection_tokens, find

__all__ = ["InFlightFull", "PowermemProxy", "TooManyStreams"]

# Request headers never forwarded: ours (and the client's baggage, which powermem would hand
# on to third-party providers), framing (re-done by the forwarder), and what we set ourselves.
_DROP = frozenset(
    {
        b"baggage",
        b"expect",
        b"content-length",
        b"transfer-encoding",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
# Concurrent long streams (MCP sessions) one client address may hold.
STREAMS_PER_CLIENT = 64


class InFlightFull(GatewayError):
    """Every ledger slot of this worker is taken: too many requests in flight at once."""

    status = 503
    code = "TOO_MANY_REQUESTS_IN_FLIGHT"


class TooManyStreams(RateLimited):
    """One client address holds too many long streams open."""


@dataclass(slots=True)
class _Taken:
    """The ledger entry a request uses: its own (`owned`), or its MCP session's."""

    entry: Entry | None
    owned: bool
    # The entry's failed LLM calls before this request, so only its own are reported.
    failures: int = 0


class PowermemProxy:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.registry = app[REGISTRY]
        self.settings = app[SETTINGS]
        self.ledger: Ledger = app[LEDGER]
        self.pools = app[UPSTREAM_POOLS]
        self.metrics = app[METRICS]
        self.limits = self.registry.limits
        self.sessions = McpSessions(self.ledger)
        self._streams: dict[str, int] = {}

    async def handle(self, ex: Exchange, route: Route) -> None:
        started = time.perf_counter()
        binding: Binding | None = None
        status = 500
        try:
            binding = await bind(
                powermem_headers(ex.headers),
                self.registry,
                scope=route.scope,
                source=ex.peer,
            )
            status = await self._forward(ex, route, binding)
        except GatewayError as exc:
            status = exc.status
            if binding is not None:
                exc.headers.update(binding.response_headers())
                self.registry.count(binding.record.instance_id, requests=1, errors=1)
            raise
        finally:
            record = binding.record if binding is not None else None
            account(
                ex,
                route="proxy",
                status=ex.status or status,
                started=started,
                instance_id=record.instance_id if record else None,
                client=record.client if record else None,
                metrics=self.metrics,
            )

    async def check_scope(self, ex: Exchange, scope: str) -> None:
        """A scoped URL to one of the gateway's own routes: its instance must exist, with its
        secret on a shared gateway, exactly as for a proxied request (the error if not)."""
        await bind(powermem_headers(ex.headers), self.registry, scope=scope, source=ex.peer)

    async def _forward(self, ex: Exchange, route: Route, binding: Binding | None) -> int:
        instance_id = binding.record.instance_id if binding is not None else None
        if route.path.startswith("/api/"):
            # powermem limits its REST routes per client (not /mcp, not its dashboard).
            await self.limits.admit_client(ex.peer, route=_route_key(ex.method, route.path))
        if instance_id is not None:
            await self.limits.admit_instance(instance_id)
        url = self.app[UPSTREAM].url
        stream = _is_stream(route, ex)
        if stream:
            self._take_stream(ex.peer)
        session = find(ex.headers, SESSION_HEADER) if is_mcp(route.path) else None
        entry = self.sessions.entry_for(session, instance_id) if session else None
        taken = _Taken(entry, owned=entry is None)
        if taken.owned:
            taken.entry = self.ledger.issue(instance_id)
        try:
            if taken.entry is None:
                raise InFlightFull(
                    "Too many requests are in flight at once; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            taken.failures = self.ledger.outcome(taken.entry).failures
            headers = _upstream_headers(ex, baggage_header(instance_id, taken.entry.nonce))
            rewrite = partial(self._rewrite, binding, taken, route, ex)
            result = await forward(
                ex,
                self.pools.get(url, stream=stream),
                target=route.target.encode(),
                headers=headers,
                rewrite=rewrite,
                timeout=self.settings.upstream_timeout,
            )
            if session is not None and ex.method == b"DELETE" and result.status < 400:
                self.sessions.end(session)
            return result.status
        finally:
            if taken.entry is not None and taken.owned:
                self.ledger.release(taken.entry)
            if stream:
                self._give_stream(ex.peer)

    def _rewrite(
        self,
        binding: Binding | None,
        taken: _Taken,
        route: Route,
        ex: Exchange,
        status: int,
        headers: list[Header],
    ) -> list[Header]:
        """The response head on its way to the client (runs once, when it arrives)."""
        assert taken.entry is not None
        if taken.owned and status < 400 and is_mcp(route.path):
            opened = find(headers, SESSION_HEADER)
            instance_id = binding.record.instance_id if binding is not None else None
            if opened is not None and self.sessions.adopt(opened, taken.entry, instance_id):
                taken.owned = False  # the session keeps it (see gateway.proxy.mcp)
        if route.prefix:
            headers = [_rescope(h, route.prefix, find(ex.headers, b"host")) for h in headers]
        if binding is None:
            return headers
        record = binding.record
        headers += [(k.encode(), v.encode()) for k, v in binding.response_headers().items()]
        outcome = self.ledger.outcome(taken.entry)
        if outcome.failures > taken.failures:  # this request's own calls, not the session's
            value = f"{outcome.status} {outcome.reason}"
            headers.append((b"X-PowerMem-LLM-Error", value.encode()))
        self.registry.count(record.instance_id, requests=1, errors=int(status >= 500))
        return headers

    def _take_stream(self, peer: str) -> None:
        count = self._streams.get(peer, 0)
        if count >= STREAMS_PER_CLIENT:
            raise TooManyStreams(
                f"This client holds {count} streams open already; close some and retry.",
                headers={"Retry-After": "5"},
            )
        self._streams[peer] = count + 1

    def _give_stream(self, peer: str) -> None:
        left = self._streams.get(peer, 1) - 1
        if left > 0:
            self._streams[peer] = left
        else:
            self._streams.pop(peer, None)


_ID_SEGMENT = re.compile(r"[0-9]+|[0-9a-f-]{16,}|pmem-[0-9a-f]{16}", re.IGNORECASE)


def _route_key(method: bytes, path: str) -> str:
    """The route a path belongs to, as powermem's per-route limit sees it: ids collapsed."""
    parts = [("{}" if _ID_SEGMENT.fullmatch(p) else p) for p in path.split("/")]
    return method.decode("latin-1") + " " + "/".join(parts)


def _is_stream(route: Route, ex: Exchange) -> bool:
    """MCP (streamable HTTP) and anything asking for an event stream may stay open for long."""
    if is_mcp(route.path):
        return True
    accept = find(ex.headers, b"accept")
    return accept is not None and b"text/event-stream" in accept


def _upstream_headers(ex: Exchange, baggage: str) -> list[Header]:
    drop = HOP_BY_HOP | connection_tokens(ex.headers) | _DROP
    out = [h for h in ex.headers if h[0] not in drop and not h[0].startswith(b"x-powermem-")]
    peer = ex.peer.encode()
    forwarded = find(ex.headers, b"x-forwarded-for")
    out.append((b"baggage", baggage.encode()))
    out.append((b"x-forwarded-for", forwarded + b", " + peer if forwarded else peer))
    out.append((b"x-forwarded-proto", b"http"))
    host = find(ex.headers, b"host")
    if host is not None:
        out.append((b"x-forwarded-host", host))
    return out


_SELF_REFERENCES = frozenset({b"location", b"content-location"})


def _rescope(header: Header, prefix: str, host: bytes | None) -> Header:
    """`Location: /mcp` → `/i/<instance>/mcp`, and the same for an absolute URL to us."""
    key, value = header
    if key not in _SELF_REFERENCES:
        return header
    scoped = prefix.encode()
    if value.startswith(b"/") and not value.startswith(b"//"):
        return key, scoped + value
    if host is not None:
        for scheme in (b"http://", b"https://"):
            origin = scheme + host
            if value.startswith(origin + b"/") or value == origin:
                return key, origin + scoped + value[len(origin) :]
    return header
