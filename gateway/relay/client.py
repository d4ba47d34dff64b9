"""Outbound calls to LLM providers: pooled connections, bounded retries, one deadline.

Requests are built from scratch, so nothing the caller sent (its `baggage`, `traceparent`, our
relay token) can reach a provider; there is no cookie jar, no proxy from the environment, and
redirects are never followed (a redirect could carry the key to a host nobody registered).
Connections are pooled per origin in an LRU of `MAX_ORIGINS` pools, each at most `PER_ORIGIN`
connections, closed after `IDLE` seconds unused; at most `MAX_IDLE` idle connections are kept
over all origins (the least recently used origins' go first). So a thousand client base URLs
keep their connections warm, and cost a bounded number of descriptors.

Calls to a client-chosen base URL (`Target.client_url`) resolve the host name under the
base-URL policy (`gateway.policy.baseurls`) and connect only to the addresses it approves;
an address literal is checked before anything is resolved.

One deadline covers a call, retries included (`deadline`, `--relay-deadline`): 429 and 5xx
answers and connection failures are retried with backoff (honouring Retry-After) while time is
left, and the error says which provider and after how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import ssl
import time
from collections import OrderedDict
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from gateway.errors import BaseUrlRefused, ProviderError
from gateway.policy.baseurls import AddressRefused, PolicyResolver, UrlPolicy, parse_host
from gateway.relay.answer import ProviderAnswer
from gateway.relay.anthropic import from_anthropic_error
from gateway.relay.jsonio import encode_json
from gateway.relay.target import Target
from gateway.wire.client import ClientConnection, UpstreamBroke
from gateway.wire.heads import Header, request_head
from gateway.wire.pool import Pool, PoolBusy, PoolClosed

__all__ = ["ProviderPool"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER = 10.0
MAX_ORIGINS = 2048
PER_ORIGIN = 64
IDLE = 30.0
MAX_IDLE = 1024
DNS_TTL = 60.0
MAX_DNS = 1024
ERROR_BODY = 64 * 1024


def _retry_delay(attempt: int, retry_after: bytes | None) -> float:
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
    backoff: float = min(0.25 * 2.0**attempt, 4.0)
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


class ProviderPool:
    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        deadline: float | None = None,
        policy: UrlPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """`timeout`: the most one attempt may wait for an answer's head, or one pause in a
        streamed answer; `deadline`: the most a whole call may take, retries included."""
        self._timeout = timeout
        self._retries = retries
        self._deadline = deadline if deadline is not None else timeout * (retries + 1)
        self._policy = policy if policy is not None else UrlPolicy(allow_private=True)
        self._resolver = resolver
        self._pools: OrderedDict[tuple[str, str, int, bool], Pool] = OrderedDict()
        self._dns: OrderedDict[tuple[str, int, bool], tuple[float, list[str]]] = OrderedDict()
        self._tls: ssl.SSLContext | None = None
        self._idle = 0  # idle connections over every origin's pool
        self._closing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    # -- connections ----------------------------------------------------------------------------

    def _pool(self, url: URL, *, guarded: bool) -> Pool:
        key = (url.scheme, url.host or "", url.port or 0, guarded)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        pool = Pool(
            lambda: self._connect(url, guarded=guarded),
            limit=PER_ORIGIN,
            acquire_timeout=min(10.0, self._timeout),
            connect_timeout=min(10.0, self._timeout),
            idle_timeout=IDLE,
            on_idle=self._idle_changed,
        )
        self._pools[key] = pool
        while len(self._pools) > MAX_ORIGINS:
            _, evicted = self._pools.popitem(last=False)
            task = asyncio.get_running_loop().create_task(evicted.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return pool

    def _idle_changed(self, delta: int) -> None:
        self._idle += delta
        if delta > 0 and self._idle > MAX_IDLE:
            for pool in self._pools.values():  # least recently used origins first
                pool.close_idle()
                if self._idle <= MAX_IDLE * 3 // 4:
                    break

    async def _addresses(self, host: str, port: int, *, guarded: bool) -> list[str]:
        key = (host, port, guarded)
        now = time.monotonic()
        cached = self._dns.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        if parse_host(host) is not None:
            # An address literal: nothing to resolve, and `post` has checked it already.
            return [host.strip("[]")]
        inner = self._resolver if self._resolver is not None else ThreadedResolver()
        resolver = PolicyResolver(self._policy, inner) if guarded else inner
        found = await resolver.resolve(host, port, socket.AF_UNSPEC)
        addresses = [r["host"] for r in found]
        self._dns[key] = (now + DNS_TTL, addresses)
        self._dns.move_to_end(key)
        while len(self._dns) > MAX_DNS:
            self._dns.popitem(last=False)
        return addresses

    async def _connect(self, url: URL, *, guarded: bool) -> ClientConnection:
        host = url.host or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        tls = self._tls_context() if url.scheme == "https" else None
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for address in await self._addresses(host, port, guarded=guarded):
            try:
                _, conn = await loop.create_connection(
                    ClientConnection,
                    address,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
                return conn
            except OSError as exc:
                last = exc
        raise last or OSError(f"no address for {host}")

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    # -- calls ----------------------------------------------------------------------------------

    async def post(self, target: Target, body: dict[str, Any]) -> ProviderAnswer:
        """POST `body`; a 2xx answer (body not yet read; `release()` it) or `ProviderError`."""
        url = URL(target.url)
        if target.client_url:
            self._policy.check_host(url.host or "")
        payload = encode_json(body)
        head = _head(url, target, payload, stream=body.get("stream") is True)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ends = started + self._deadline
        pool = self._pool(url, guarded=target.client_url)
        attempt = 0
        while True:
            answer: ProviderAnswer | None = None
            failure: ProviderError
            try:
                answer = await self._attempt(pool, head + payload, ends)
            except BaseUrlRefused:
                raise
            except AddressRefused as exc:
                raise exc.error from None
            except TimeoutError:  # before OSError, of which it is a subclass
                failure = ProviderError(
                    f"{target.spec.name} did not answer within "
                    f"{loop.time() - started:.3g}s (relay deadline {self._deadline:g}s).",
                    status=504,
                    error_type="timeout",
                )
            except (OSError, UpstreamBroke, PoolBusy, PoolClosed) as exc:
                failure = ProviderError(
                    f"Cannot reach {target.spec.name} at {url.origin()} "
                    f"({type(exc).__name__}); check the instance's base_url.",
                    status=502,
                )
            else:
                if answer.status < 300:
                    return answer
                failure = await self._error(target, answer)
            retry_after = answer.header(b"retry-after") if answer is not None else None
            retriable = answer is None or answer.status in RETRY_STATUSES
            delay = _retry_delay(attempt, retry_after)
            if not retriable or attempt >= self._retries or loop.time() + delay >= ends:
                raise failure
            attempt += 1
            await asyncio.sleep(delay)

    async def _attempt(self, pool: Pool, data: bytes, ends: float) -> ProviderAnswer:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(min(ends, loop.time() + self._timeout)):
            conn = await pool.acquire()
            answer = ProviderAnswer(pool, conn, stall=self._timeout)
            conn.send(answer, data)
            try:
                await answer.head
            except BaseException:
                answer.release()
                raise
        return answer

    async def _error(self, target: Target, answer: ProviderAnswer) -> ProviderError:
        try:
            if 300 <= answer.status < 400:
                return ProviderError(
                    f"{target.spec.name} answered with a redirect ({answer.status}); "
                    "redirects are not followed: fix the instance's base_url.",
                    status=502,
                )
            try:
                async with asyncio.timeout(self._timeout):
                    raw = (await answer.read(ERROR_BODY))[:ERROR_BODY]
            except (UpstreamBroke, TimeoutError):
                raw = b""
        finally:
            answer.release()
        if target.spec.wire == "anthropic":
            message, error_type = from_anthropic_error(answer.status, raw)
        else:
            message, error_type = _openai_error_text(raw)
        # A provider may echo what it was sent; never let the key travel back in a message.
        if target.api_key:
            message = message.replace(target.api_key, "[redacted]")
        return ProviderError(
            f"{target.spec.name} returned {answer.status}: {message[:500]}",
            status=answer.status,
            error_type=error_type,
        )


def _head(url: URL, target: Target, payload: bytes, *, stream: bool) -> bytes:
    port = url.port
    default = 443 if url.scheme == "https" else 80
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    authority = host if port in (None, default) else f"{host}:{port}"
    headers: list[Header] = [
        (b"Host", authority.encode()),
        (b"Content-Type", b"application/json"),
        (b"Accept", b"text/event-stream" if stream else b"application/json"),
        # Never compressed: the relay reads (and scrubs) what it passes on.
        (b"Accept-Encoding", b"identity"),
        (b"User-Agent", b"powermem-gateway"),
        (b"Content-Length", str(len(payload)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in target.auth_headers().items()]
    if target.spec.wire == "anthropic" and not any(k == b"anthropic-version" for k, _ in headers):
        headers.append((b"anthropic-version", b"2023-06-01"))
    return request_head(b"POST", url.raw_path_qs.encode(), headers)


def _openai_error_text(raw: bytes) -> tuple[str, str]:
    try:
        error = json.loads(raw)["error"]
        if isinstance(error, dict):
            return str(error.get("message") or "no message"), str(error.get("type") or "api_error")
        return str(error), "api_error"
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return (text[:200] or "no message"), "api_error"
