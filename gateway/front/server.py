"""The listening side: a protocol factory that aiohttp's runner and sites accept as a server.

`FrontServer` is what `GatewayRunner` hands to aiohttp's sites in place of aiohttp's own
`web.Server`: it makes one `FrontProtocol` per connection, caps connections per client
address, runs each exchange through the dispatcher with the one mapping from errors to
answers, and on shutdown lets exchanges in progress finish, up to the runner's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import GatewayError, RateLimited
from gateway.front.connection import FrontProtocol
from gateway.front.exchange import Exchange
from gateway.http.envelope import error_body
from gateway.wire.heads import response_head

__all__ = ["FrontServer", "Limits"]

log = logging.getLogger("gateway.front")

Handler = Callable[[Exchange], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Per-connection bounds of the front (seconds and counts)."""

    header_timeout: float = 15.0
    body_timeout: float = 60.0
    keepalive_timeout: float = 75.0
    # Connections one client address may hold open at once; more are refused at accept.
    connections_per_client: int = 512
    # How often the same client's slow or refused connections are logged (one line each).
    log_interval: float = 60.0
    # Seconds a connection is not read after the gateway refused two of its requests in a
    # row with 429: a client that retries at once instead of after `Retry-After` costs
    # nothing while it waits, so a flood of refused requests cannot take the CPU from
    # everyone else. A single refusal is not held (the client's next, different request on
    # that connection goes at once); other connections, even from the same address, are
    # not slowed; the per-address connection cap bounds how many a client can have waiting.
    refused_hold: float = 1.0


# Distinct client addresses remembered for "logged recently" (oldest forgotten first).
_NOTED_MAX = 1024


class FrontServer:
    def __init__(self, inner: web.Server, handler: Handler, *, limits: Limits) -> None:
        # aiohttp's own server for the gateway's routes (the bridge connects to it).
        self.inner = inner
        self.handler = handler
        self.limits = limits
        self.connections: set[FrontProtocol] = set()
        self._per_client: dict[str, int] = {}
        self._noted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    @property
    def in_flight(self) -> int:
        """Requests being handled now."""
        return len(self._tasks)

    # -- connections ------------------------------------------------------------------------

    def accept(self, protocol: FrontProtocol) -> bool:
        if self._closing:
            return False
        count = self._per_client.get(protocol.peer, 0)
        if count >= self.limits.connections_per_client:
            self._note(protocol.peer, "too-many-connections")
            return False
        self._per_client[protocol.peer] = count + 1
        self.connections.add(protocol)
        return True

    def forget(self, protocol: FrontProtocol) -> None:
        if protocol in self.connections:
            self.connections.discard(protocol)
            left = self._per_client.get(protocol.peer, 1) - 1
            if left > 0:
                self._per_client[protocol.peer] = left
            else:
                self._per_client.pop(protocol.peer, None)

    def note_slow(self, protocol: FrontProtocol, kind: str) -> None:
        self._note(protocol.peer, f"slow-{kind}")

    def _note(self, peer: str, what: str) -> None:
        """One log line per client and kind of trouble per interval, never one per connection."""
        now = time.monotonic()
        key = (peer, what)
        last = self._noted.get(key)
        if last is not None and now - last < self.limits.log_interval:
            return
        self._noted[key] = now
        self._noted.move_to_end(key)
        while len(self._noted) > _NOTED_MAX:
            self._noted.popitem(last=False)
        log.warning("client %s: %s (logged once per %gs)", peer, what, self.limits.log_interval)

    # -- exchanges --------------------------------------------------------------------------

    async def run(self, exchange: Exchange) -> None:
        """Run the handler; whatever it raises becomes the one answer the client gets."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(exchange)
        except GatewayError as exc:
            answer(exchange, exc)
        except Exception:
            # Tracebacks may hold request data; the route and type are enough to find it.
            log.exception("unexpected error on %s", exchange.method.decode("latin-1"))
            answer(exchange, GatewayError("Internal gateway error; see the gateway log."))
        finally:
            self._tasks.discard(task)
            if not exchange.finished:
                exchange.abort()

    def refuse(self, protocol: FrontProtocol, exc: GatewayError) -> None:
        """Answer a request that never became an exchange (unparseable, too slow), then close."""
        body = error_body(exc)
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
            *((k.encode(), v.encode()) for k, v in exc.headers.items()),
        ]
        protocol.write(response_head(exc.status, headers) + body)

    # -- what aiohttp's runner calls on shutdown ----------------------------------------------

    def pre_shutdown(self) -> None:
        self._closing = True
        self.inner.pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*self._tasks, return_exceptions=True)
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await self.inner.shutdown(timeout)


def answer(exchange: Exchange, exc: GatewayError, *, openai_shape: bool = False) -> None:
    """An error as the client's answer, if nothing has been sent yet; else cut the stream."""
    if exchange.started:
        exchange.abort()
        return
    exchange.refused = isinstance(exc, RateLimited)
    body = error_body(exc, openai_shape=openai_shape)
    headers = [(b"Content-Type", b"application/json")]
    headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    exchange.respond(exc.status, headers, body)
