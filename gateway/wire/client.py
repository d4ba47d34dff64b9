"""One client-side HTTP/1.1 connection: send a request, hand the response to a sink as it comes.

The response is parsed by httptools (llhttp) and passed on piece by piece — head, body chunks
(de-chunked), end — so a proxy can stream it without holding it. Flow control goes both ways:
the sink may pause this connection's reading, and is told when the socket cannot take more of
the request body. The connection never retries or decides anything; `Pool` and the proxy do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol, cast

from httptools import HttpParserError, HttpResponseParser

from gateway.wire.heads import Header

__all__ = ["ClientConnection", "ResponseSink", "UpstreamBroke"]

MAX_HEADERS = 256
MAX_HEAD_BYTES = 64 * 1024


class UpstreamBroke(Exception):
    """The connection ended or the peer sent something unparseable before the response ended."""


class ResponseSink(Protocol):
    """Who receives a response; every call happens on the event loop, in this order."""

    def response_head(self, status: int, headers: list[Header], keep_alive: bool) -> None: ...

    def response_body(self, chunk: bytes) -> None: ...

    def response_end(self) -> None: ...

    def response_failed(self, exc: BaseException) -> None: ...

    def response_flush(self) -> None:
        """Everything that arrived in one read has been handed over: write it on."""

    def upstream_paused(self) -> None:
        """The socket's write buffer is full: stop producing request body until resumed."""

    def upstream_resumed(self) -> None: ...


class ClientConnection(asyncio.Protocol):
    """A pooled connection; `Pool` creates it and hands it out for one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # How many requests went out on this connection: 0 means it is fresh, and a failure on
        # a fresh connection is never blamed on a stale pool.
        self.requests = 0
        self.idle_since = time.monotonic()
        # Set by the pool: called once when the connection is gone for good.
        self.on_close: Callable[[ClientConnection], None] | None = None
        self._sink: ResponseSink | None = None
        # Dropped when the connection is lost: it holds our callbacks, a cycle that only the
        # garbage collector would break, and its full collections stall the loop.
        self._parser: HttpResponseParser | None = HttpResponseParser(self)
        self._headers: list[Header] = []
        self._head_bytes = 0
        self._informational = False
        self._close_delimited = False
        self._head_request = False
        self._keep_alive = False
        self._reusable = False
        # Whether any byte of the current response arrived (a retry is safe only before that).
        self.responded = False
        self._busy = False

    # -- the pool's view ----------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Idle, open, and the last response said the connection may be kept."""
        return not self.closed and not self._busy and self._reusable

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # -- sending ------------------------------------------------------------------------------

    def send(self, sink: ResponseSink, data: bytes, *, head_request: bool = False) -> None:
        """Start an exchange: `data` is the request head, and its body if already known."""
        assert self.transport is not None and not self._busy
        self._sink = sink
        self._busy = True
        self._reusable = False
        self.responded = False
        self._headers = []
        self._head_bytes = 0
        self._informational = False
        self._close_delimited = False
        self._head_request = head_request
        self.requests += 1
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        """More of the request body (already framed by the caller)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._sink is None:
            # Bytes nobody asked for (an idle connection): the peer is confused; drop it.
            self.close()
            return
        self.responded = True
        sink = self._sink
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(UpstreamBroke(f"unparseable response ({type(exc).__name__})"))
        except UpstreamBroke as exc:
            self._fail(exc)
        sink.response_flush()

    def eof_received(self) -> bool:
        return False  # close our side too: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        sink = self._sink
        if sink is not None and self._busy:
            if exc is None and self._close_delimited and not self._informational:
                # A response without length or chunking ends when the server closes.
                self._finish()
            else:
                self._sink = None
                self._busy = False
                sink.response_failed(
                    UpstreamBroke("the connection closed before the response ended")
                )
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        if self._sink is not None:
            self._sink.upstream_paused()

    def resume_writing(self) -> None:
        if self._sink is not None:
            self._sink.upstream_resumed()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if len(self._headers) >= MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            raise UpstreamBroke("response head too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # only a live connection is parsed
        status = parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue, 103 Early Hints: nothing the proxy passes on; the real head follows.
            self._informational = True
            self._headers = []
            return
        self._informational = False
        self._keep_alive = parser.should_keep_alive()
        names = {name for name, _ in self._headers}
        self._close_delimited = (
            b"content-length" not in names
            and b"transfer-encoding" not in names
            and status not in (204, 304)
            and not self._head_request
        )
        sink = self._sink
        assert sink is not None
        sink.response_head(status, self._headers, self._keep_alive)
        if self._head_request:
            # llhttp cannot be told that a HEAD response has no body; end the exchange here
            # and never reuse the connection, whose parser now expects a body.
            self._keep_alive = False
            self._finish()

    def on_body(self, body: bytes) -> None:
        if self._sink is not None and not self._head_request:
            self._sink.response_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._sink is not None:
            self._finish()

    # -- internals --------------------------------------------------------------------------

    def _finish(self) -> None:
        sink, self._sink = self._sink, None
        self._busy = False
        self._reusable = self._keep_alive and not self.closed
        self.idle_since = time.monotonic()
        if sink is not None:
            sink.response_end()

    def _fail(self, exc: BaseException) -> None:
        sink, self._sink = self._sink, None
        self._busy = False
        self.close()
        if sink is not None:
            sink.response_failed(exc)
