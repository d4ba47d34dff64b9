"""One client connection on the listening port: parse requests, run them in order, keep time.

Request heads are parsed by httptools (llhttp, strict: conflicting `Content-Length` and
`Transfer-Encoding`, obs-fold and bare CR/LF are errors) and become `Exchange`s, answered one
at a time in arrival order (pipelined requests wait, their bodies buffered up to a bound).
The connection keeps one deadline, moved as it goes: a head must arrive within
`header_timeout`, an idle keep-alive connection lives `keepalive_timeout`, a body may pause at
most `body_timeout` between bytes, and so may the client's reading of its answer. Flow control
runs both ways: a full write buffer pauses whoever produces the response, a consumer that
cannot keep up pauses reading the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from gateway.errors import BadRequest, GatewayError
from gateway.front.exchange import BodyBroken, Exchange, RequestBody
from gateway.wire.heads import Header

__all__ = ["FrontProtocol", "HeadTooLarge", "Server"]

log = logging.getLogger("gateway.front")

MAX_HEADERS = 100
MAX_FIELD = 32 * 1024
MAX_HEAD = 64 * 1024
MAX_TARGET = 16 * 1024
# Pipelined requests waiting behind the current one; more and the client is read no further.
MAX_QUEUED = 16


class HeadTooLarge(BadRequest):
    """The request head (target, a header, or all of them) is over our limits."""

    status = 431
    code = "HEADERS_TOO_LARGE"


class Limits(Protocol):
    @property
    def header_timeout(self) -> float: ...

    @property
    def body_timeout(self) -> float: ...

    @property
    def keepalive_timeout(self) -> float: ...

    @property
    def refused_hold(self) -> float: ...


class Server(Protocol):
    """What a connection needs from its server (`gateway.front.server.FrontServer`)."""

    @property
    def limits(self) -> Limits: ...

    def accept(self, protocol: FrontProtocol) -> bool: ...

    def forget(self, protocol: FrontProtocol) -> None: ...

    def run(self, exchange: Exchange) -> Coroutine[Any, Any, None]: ...

    def refuse(self, protocol: FrontProtocol, exc: GatewayError) -> None: ...

    def note_slow(self, protocol: FrontProtocol, kind: str) -> None: ...


class FrontProtocol(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.writing_paused = False
        # Dropped when the connection is lost: it holds our callbacks, a cycle that only the
        # garbage collector would break, and its full collections stall the loop.
        self._parser: HttpRequestParser | None = HttpRequestParser(self)
        self._queue: deque[Exchange] = deque()
        self._task: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._body_paused = False
        # Not read for a while after refusals in a row (gateway.front.server.Limits.refused_hold).
        self._refusals = 0
        self._held = False
        self._closing = False
        # The request being parsed (its head, until the head completes).
        self._url = b""
        self._headers: list[Header] = []
        self._head_bytes = 0
        self._parsing: Exchange | None = None
        self._in_head = False
        self._continue_sent = False
        # A malformed pipelined head, answered once the requests before it have been.
        self._refusal: GatewayError | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_kind = "idle"

    # -- connection lifecycle -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.server.accept(self):
            stream.abort()
            self.transport = None
            return
        stream.set_write_buffer_limits(high=256 * 1024)
        self._arm(self.server.limits.header_timeout, "header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser = None
        if self.transport is None and not self._queue:
            return
        self.transport = None
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        broken = BodyBroken("the client closed the connection")
        for exchange in self._queue:
            exchange.body.end(broken)
        if self._queue:
            # The handler sees the broken body and its writes go nowhere; whoever produces
            # the response (an upstream exchange) is told, so it can let go of its connection.
            current = self._queue[0]
            current.gone = True
            if current.on_gone is not None:
                current.on_gone()
        self.server.forget(self)
        if self.writing_paused:
            self.writing_paused = False
            self._notify_drain(resume=True)

    def eof_received(self) -> bool | None:
        # The client closed its side. A client that stops sending but still reads is rare; a
        # killed one (its FIN) is not, and would hold its powermem connection, or an MCP
        # stream, until powermem next writes. So, as nginx does, it is taken as gone: the
        # transport closes and `connection_lost` lets go of whatever it was waiting for.
        return False

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._upgrade(data, exc.args[0] if exc.args else len(data))
        except HttpParserError as exc:
            # httptools wraps what a callback raises (`HeadTooLarge`, a refused upgrade).
            ours = exc.__context__
            if isinstance(ours, GatewayError):
                self._bad(ours)
            else:
                self._bad(BadRequest(f"Malformed HTTP request ({_reason(exc)})."))
        except GatewayError as exc:
            self._bad(exc)

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._notify_drain(resume=False)
        if self._timeout_kind == "none":
            self._arm(self.server.limits.body_timeout, "send")

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._notify_drain(resume=True)
        if self._timeout_kind == "send":
            self._disarm()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._in_head = True
        if not self._queue:
            self._arm(self.server.limits.header_timeout, "header")

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_TARGET:
            raise HeadTooLarge(f"The request target is longer than {MAX_TARGET} bytes.")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if len(value) > MAX_FIELD or len(name) > MAX_FIELD:
            raise HeadTooLarge(f"A header field is longer than {MAX_FIELD} bytes.")
        if len(self._headers) >= MAX_HEADERS or self._head_bytes > MAX_HEAD:
            raise HeadTooLarge(f"The request head is larger than {MAX_HEAD} bytes.")
        if self._in_head:
            # Trailer fields (after a chunked body) count toward the limits but are dropped:
            # merged into the head they would become headers the door never checked.
            self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        assert parser is not None  # only a live connection is parsed
        headers = self._headers
        length: int | None = None
        chunked = False
        for key, value in headers:
            if key == b"content-length":
                length = int(value)  # llhttp has validated it (and refused duplicates)
            elif key == b"transfer-encoding":
                # Only plain chunked: llhttp refuses other final codings only after this
                # callback, and a coding under chunked (`gzip, chunked`) would reach powermem
                # undone under our re-framing.
                if value.strip().lower() != b"chunked":
                    raise BadRequest("Transfer-Encoding other than 'chunked' is not accepted.")
                chunked = True
        if (chunked or length) and parser.should_upgrade():
            # llhttp stops at an upgrade and never reads the body: forwarding the request
            # would drop its body silently (see `_upgrade`).
            raise BadRequest("A protocol upgrade request cannot carry a body here.")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            # llhttp takes `HTTP/2.0` and `HTTP/0.9` request lines; answered as if HTTP/1.x,
            # they would get status lines claiming a protocol these answers are not.
            raise VersionNotSupported(f"HTTP/{version} is not served here; use HTTP/1.1.")
        body = RequestBody(self, length=length, chunked=chunked)
        exchange = Exchange(
            self,
            method=parser.get_method(),
            target=self._url,
            version=version.encode(),
            headers=headers,
            keep_alive=parser.should_keep_alive(),
            body=body,
            peer=self.peer,
        )
        self._parsing = exchange if body.present else None
        self._queue.append(exchange)
        if len(self._queue) == 1:
            self._start(exchange)
        elif len(self._queue) > MAX_QUEUED:
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.body.feed(body)
            if self._timeout_kind == "body":
                self._arm(self.server.limits.body_timeout, "body")

    def on_message_complete(self) -> None:
        if self._parsing is not None:
            self._parsing.body.end()
            self._parsing = None
        if self._timeout_kind == "body":
            self._disarm()

    # -- what exchanges and handlers call -----------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closing:
            self.transport.write(data)

    def continue_body(self) -> None:
        """A handler wants the body: answer `Expect: 100-continue` and start its clock."""
        exchange = self._queue[0] if self._queue else None
        if exchange is None or exchange.body.complete:
            return
        if not self._continue_sent and exchange.header(b"expect") is not None:
            self._continue_sent = True
            if exchange.version == b"1.1":
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._arm(self.server.limits.body_timeout, "body")

    def pause_body(self) -> None:
        self._body_paused = True
        self._pause_reading()

    def resume_body(self) -> None:
        self._body_paused = False
        if len(self._queue) <= MAX_QUEUED:
            self._resume_reading()

    def exchange_done(self, exchange: Exchange) -> None:
        """Called by `Exchange.finish`/`abort`: next request, or close."""
        if not self._queue or self._queue[0] is not exchange:
            return
        self._queue.popleft()
        self._continue_sent = False
        reusable = (
            exchange.keep_alive
            and not exchange.aborted
            and exchange.body.complete
            and self.transport is not None
            and not self._closing
        )
        if exchange.aborted and self.transport is not None:
            self._closing = True
            self.transport.abort()
            return
        if not reusable:
            if self._refusal is not None and not self._queue:
                self.server.refuse(self, self._refusal)
            self._close()
            return
        self._refusals = self._refusals + 1 if exchange.refused else 0
        if self._refusals > 1 and (hold := self.server.limits.refused_hold) > 0:
            # Refused (429) again: nothing more is read on this connection for a while.
            self._pause_reading()
            self._held = True
            asyncio.get_running_loop().call_later(hold, self._release)
            return
        self._next()

    def _release(self) -> None:
        self._held = False
        if self.transport is not None and not self._closing:
            self._next()

    def _next(self) -> None:
        """The connection is free: start a pipelined request, or wait for the next one."""
        if self._body_paused:
            self.resume_body()
        if self._queue:
            self._start(self._queue[0])
            self._resume_reading()
        else:
            self._resume_reading()
            self._arm(self.server.limits.keepalive_timeout, "idle")

    # -- internals --------------------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        if self.writing_paused:  # the client is still not reading what came before
            self._arm(self.server.limits.body_timeout, "send")
        else:
            self._disarm()
        self._task = asyncio.get_running_loop().create_task(self.server.run(exchange))

    def _bad(self, exc: GatewayError) -> None:
        """The client sent something we cannot parse, and nothing more is read. A broken body
        is for its own request to answer (`BodyBroken.answer`); a broken head is answered
        after the requests before it (pipelined) have been, then the connection closes."""
        self._parser = HttpRequestParser(self)  # a failed parser raises forever; keep it quiet
        self._pause_reading()
        if self._parsing is not None:
            self._parsing.keep_alive = False
            self._end_current_body(BodyBroken("malformed request", exc))
            return
        if self._queue:
            self._queue[-1].keep_alive = False
            self._refusal = exc
            return
        self.server.refuse(self, exc)
        self._close()

    def _upgrade(self, data: bytes, offset: int) -> None:
        """llhttp stops at an upgrade (`Connection: upgrade`, and every CONNECT). We switch
        to nothing: a bodiless upgrade request is served as a plain one (the header is
        hop-by-hop and dropped; one with a body was refused in `on_headers_complete`). After
        CONNECT a client may send tunnel bytes at once: nothing more is read as HTTP."""
        exchange = self._queue[-1] if self._queue else None
        self._parser = HttpRequestParser(self)
        if exchange is None or exchange.method == b"CONNECT":
            if exchange is not None:
                exchange.keep_alive = False
            self._pause_reading()
            return
        if offset < len(data):
            self.data_received(data[offset:])

    def _end_current_body(self, failure: BaseException) -> None:
        if self._parsing is not None:
            self._parsing.body.end(failure)
            self._parsing = None

    def _close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (
            self._reading_paused
            and self.transport is not None
            and not self._body_paused
            and not self._held
        ):
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def _notify_drain(self, *, resume: bool) -> None:
        exchange = self._queue[0] if self._queue else None
        if exchange is not None and exchange.on_drain is not None:
            pause, resume_fn = exchange.on_drain
            (resume_fn if resume else pause)()

    def _arm(self, seconds: float, kind: str) -> None:
        """Move the connection's one deadline (a new timer only when the old one fired, or
        would fire too late: a body timeout shorter than the head's)."""
        loop = asyncio.get_running_loop()
        self._timeout_kind = kind
        self._deadline = loop.time() + seconds
        if self._timer is not None and self._deadline < self._timer.when():
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._expire)

    def _disarm(self) -> None:
        self._timeout_kind = "none"

    def _expire(self) -> None:
        self._timer = None
        if self._timeout_kind == "none" or self.transport is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        kind = self._timeout_kind
        self._timeout_kind = "none"
        if kind == "idle" and not self._in_head:
            self._close()
            return
        self.server.note_slow(self, kind)
        if kind == "send":
            # The client has taken nothing of its answer for body_timeout: gone, or a slow
            # reader that would hold its powermem connection for as long as it likes.
            self._closing = True
            self.transport.abort()
            return
        if kind == "body":
            stalled = RequestTimeout(
                f"The request body stalled for {self.server.limits.body_timeout:g}s."
            )
            self._end_current_body(BodyBroken("the request body stalled", stalled))
            if self._queue:
                self._queue[0].keep_alive = False
            return
        # A head that never completed: 408 if nothing is under way, then close.
        if not self._queue:
            self.server.refuse(self, RequestTimeout("The request head did not arrive in time."))
        self._close()


class VersionNotSupported(BadRequest):
    """The request line names an HTTP version other than 1.0 and 1.1."""

    status = 505
    code = "HTTP_VERSION_NOT_SUPPORTED"


class RequestTimeout(BadRequest):
    """The client was too slow sending its request."""

    status = 408
    code = "REQUEST_TIMEOUT"


def _reason(exc: HttpParserError) -> str:
    text = str(exc).split(":", 1)[-1].strip()
    return text[:80] or type(exc).__name__
