"""The streaming reverse proxy to powermem, which tags instance-bound requests with baggage.

Bodies stream both ways as they come (powermem's /mcp answers with server-sent events), so
nothing here holds a whole request or response in memory. Failures before the response has
started become 502/504 in the envelope; after that they can only be logged and the connection
closed, since the status line has already gone out.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.http.appkeys import (
    CLIENT_LABEL,
    INSTANCE_ID,
    RATE_LIMITER,
    REGISTRY,
    SETTINGS,
    UPSTREAM,
    UPSTREAM_SESSION,
)
from gateway.proxy.baggage import baggage_header
from gateway.proxy.binding import CONSUMED_HEADERS, Binding, bind_request

__all__ = ["proxy"]

log = logging.getLogger("gateway.http.proxy")

# RFC 9110 §7.6.1 hop-by-hop headers, plus the ones we set ourselves.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
    )
)
# Host is kept: powermem builds redirects (e.g. /mcp/ → /mcp) from it, and they must point
# back at the gateway, not at the upstream's own address.
_DROP_REQUEST = HOP_BY_HOP | CONSUMED_HEADERS | {"baggage"}
_DROP_RESPONSE = HOP_BY_HOP


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers named in `Connection` are hop-by-hop too (RFC 9110 §7.6.1)."""
    listed: set[str] = set()
    for value in headers.getall(hdrs.CONNECTION, []):
        listed.update(token.strip().lower() for token in value.split(","))
    return listed


def _upstream_headers(request: web.Request, binding: Binding | None) -> CIMultiDict[str]:
    drop = _DROP_REQUEST | _connection_listed(request.headers)
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in drop)
    # Client-sent baggage is dropped on purpose: powermem hands the whole baggage on to its LLM
    # and embedding providers, so only our own member may ever reach it.
    if binding is not None:
        headers["baggage"] = baggage_header(binding.record.instance_id)
    forwarded_for = request.headers.get("X-Forwarded-For")
    peer = request.remote or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


async def proxy(request: web.Request) -> web.StreamResponse:
    """Forward any request the gateway does not serve itself to powermem."""
    app = request.app
    binding = await bind_request(request.headers, app[REGISTRY], source=request.remote or "")
    if binding is not None:
        request[INSTANCE_ID] = binding.record.instance_id
        request[CLIENT_LABEL] = binding.record.client
    try:
        if binding is not None and (limiter := app.get(RATE_LIMITER)) is not None:
            limiter.check(binding.record.instance_id)
        return await _forward(request, binding)
    except GatewayError as exc:
        if binding is not None:
            exc.headers.update(binding.response_headers())
            app[REGISTRY].count(binding.record.instance_id, requests=1, errors=1)
        raise


async def _forward(request: web.Request, binding: Binding | None) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    target = URL(app[UPSTREAM].url + request.raw_path, encoded=True)
    session = app[UPSTREAM_SESSION]
    upstream_request = session.request(
        request.method,
        target,
        headers=_upstream_headers(request, binding),
        data=request.content if request.body_exists else None,
        allow_redirects=False,
    )
    try:
        async with asyncio.timeout(settings.upstream_timeout):
            upstream = await upstream_request
    except TimeoutError:
        raise UpstreamTimeout(
            f"powermem did not answer within {settings.upstream_timeout:g}s; "
            "retry, or raise --upstream-timeout if its LLM calls are slow."
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(
            f"Cannot reach the powermem server ({type(exc).__name__}); "
            "check that it is running, or run `powermem-gateway doctor`."
        ) from None

    async with upstream:
        drop = _DROP_RESPONSE | _connection_listed(upstream.headers)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in drop:
                response.headers.add(name, value)
        if binding is not None:
            response.headers.update(binding.response_headers())
            app[REGISTRY].count(
                binding.record.instance_id, requests=1, errors=int(upstream.status >= 500)
            )
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except ConnectionResetError:
            # The client went away (aiohttp's "Cannot write to closing transport"): nobody is
            # left to answer, and it is not an error of ours or of powermem.
            log.debug("client left during %s %s", request.method, request.path)
            return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Too late for an error response: the status line has gone out. Cut the stream
            # so the client sees a truncated body rather than a silently complete one.
            log.warning(
                "upstream stream broke on %s %s: %s", request.method, request.path, type(exc)
            )
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
    return response
