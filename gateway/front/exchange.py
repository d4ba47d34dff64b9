"""One request and its response, as the front's handlers see them.

A handler reads the head (`method`, `target`, `headers`), takes the body either whole
(`await body.read(limit)`) or as a stream (`body.stream(on_chunk, on_end)`), and answers with
`send_head` / `send` / `flush` / `finish` (or `respond` for a small whole answer); output is
queued until `flush`, so a head and the body that arrived with it cost one write. Framing toward the
client is decided here once: a known length, chunked for HTTP/1.1, or close-delimited for
HTTP/1.0. Every response passes the front door's last rule on its way out: powermem's CORS
headers are removed and ours added for an allowed origin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.errors import GatewayError
from gateway.wire.heads import Header, response_head

__all__ = ["BodyBroken", "BodyTooLarge", "Connection", "Exchange", "RequestBody"]

# A body buffered before its consumer took it; past this the client's socket is paused.
BUFFER_HIGH = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
_EXPOSED = b"X-PowerMem-Instance, X-PowerMem-Instance-Created, X-PowerMem-LLM-Error"


class Connection(Protocol):
    """What an exchange needs from its connection (`gateway.front.connection.FrontProtocol`)."""

    writing_paused: bool

    def write(self, data: bytes) -> None: ...

    def continue_body(self) -> None: ...

    def pause_body(self) -> None: ...

    def resume_body(self) -> None: ...

    def exchange_done(self, exchange: Exchange) -> None: ...


class BodyTooLarge(Exception):
    """The request body is over the handler's limit."""


class BodyBroken(Exception):
    """The client went away, stalled, or sent a malformed body before its body was complete."""

    def __init__(self, reason: str, answer: GatewayError | None = None) -> None:
        super().__init__(reason)
        # What to tell a client that is still there (malformed: 400, stalled: 408); None
        # when it is gone, or the connection is just cut.
        self.answer = answer


class RequestBody:
    """The request body as it arrives, for exactly one consumer."""

    def __init__(self, protocol: Connection, *, length: int | None, chunked: bool) -> None:
        self._protocol = protocol
        self.length = length
        self.chunked = chunked
        self.received = 0
        self.complete = length == 0 or (length is None and not chunked)
        self.failed: BaseException | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._on_chunk: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def present(self) -> bool:
        return self.chunked or bool(self.length)

    # -- producer (the connection) ------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self._on_chunk is not None:
            self._on_chunk(chunk)
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > BUFFER_HIGH:
            self._protocol.pause_body()
        self._wake()

    def end(self, failure: BaseException | None = None) -> None:
        if self.complete or self.failed is not None:
            return
        if failure is None:
            self.complete = True
        else:
            self.failed = failure
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(failure)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- consumer (a handler) -----------------------------------------------------------------

    async def read(self, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` past `limit`, `BodyBroken` if the client left."""
        if self.length is not None and self.length > limit:
            raise BodyTooLarge
        self._protocol.continue_body()
        while not self.complete:
            if self.failed is not None:
                raise BodyBroken(str(self.failed)) from self.failed
            if self._buffered > limit:
                raise BodyTooLarge
            self._protocol.resume_body()
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        if self._buffered > limit:
            raise BodyTooLarge
        data = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        return data

    def stream(
        self, on_chunk: Callable[[bytes], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        """Hand every chunk (what was buffered first) to `on_chunk`, then call `on_end` once."""
        self._protocol.continue_body()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        for chunk in chunks:
            on_chunk(chunk)
        if self.complete or self.failed is not None:
            on_end(self.failed)
            return
        self._on_chunk, self._on_end = on_chunk, on_end
        self._protocol.resume_body()

    def pause(self) -> None:
        """Back-pressure from the consumer: stop reading the client for now."""
        self._protocol.pause_body()

    def resume(self) -> None:
        self._protocol.resume_body()


class Exchange:
    """One request on a client connection and the response it gets."""

    __slots__ = (
        "_length",
        "_pending",
        "_protocol",
        "aborted",
        "body",
        "chunked_out",
        "cors_origin",
        "finished",
        "gone",
        "headers",
        "keep_alive",
        "method",
        "on_drain",
        "on_gone",
        "peer",
        "refused",
        "started",
        "status",
        "target",
        "version",
    )

    def __init__(
        self,
        protocol: Connection,
        *,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[Header],
        keep_alive: bool,
        body: RequestBody,
        peer: str,
    ) -> None:
        self._protocol = protocol
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.peer = peer
        # The origin a cross-origin browser request was allowed from (see gateway.front.door).
        self.cors_origin: bytes | None = None
        self.status = 0
        self.started = False
        self.finished = False
        self.aborted = False
        self.chunked_out = False
        # Answered with a 429 of the gateway's own: a connection refused twice in a row is
        # held a while before its next request is read (front.server.Limits.refused_hold).
        self.refused = False
        self._length: int | None = None
        # Output not yet written: a head waits for the body that comes with it, so a small
        # answer leaves in one write (see `flush`).
        self._pending: list[bytes] = []
        # (pause, resume): told when the client's socket cannot take more, and when it can.
        self.on_drain: tuple[Callable[[], None], Callable[[], None]] | None = None
        # Told once if the client disconnects before the response is finished.
        self.on_gone: Callable[[], None] | None = None
        self.gone = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def paused(self) -> bool:
        return self._protocol.writing_paused

    def send_head(
        self,
        status: int,
        headers: list[Header],
        *,
        length: int | None = None,
        cors: list[Header] | None = None,
    ) -> None:
        """The status line and headers; hop-by-hop and CORS headers are ours to write (`cors`:
        the door's own, such as a preflight's answer, the only ones kept)."""
        assert not self.started
        self.started = True
        self.status = status
        out = [h for h in headers if not h[0].startswith(b"access-control-")]
        if cors:
            out += cors
        if self.cors_origin is not None:
            out += (
                (b"Access-Control-Allow-Origin", self.cors_origin),
                (b"Access-Control-Expose-Headers", _EXPOSED),
                (b"Vary", b"Origin"),
            )
        no_body = self.method == b"HEAD" or status in _NO_BODY_STATUSES or status < 200
        if length is not None and not (status in _NO_BODY_STATUSES or status < 200):
            self._length = length
            out.append((b"Content-Length", str(length).encode()))
        elif no_body:
            pass
        elif self.version == b"1.1":
            self.chunked_out = True
            out.append((b"Transfer-Encoding", b"chunked"))
        else:
            self.keep_alive = False  # HTTP/1.0 without a length: the close ends the body
        if self.body.present and not self.body.complete:
            # Answered before its body was read (refused, or answered early): the rest of the
            # body will not be read as a next request, so the connection closes after this.
            self.keep_alive = False
        if not self.keep_alive:
            out.append((b"Connection", b"close"))
        elif self.version == b"1.0":
            out.append((b"Connection", b"keep-alive"))  # else a 1.0 client expects a close
        self._pending.append(response_head(status, out, version=self.version))

    def send(self, chunk: bytes) -> None:
        """Queue a piece of the body; it leaves at the next `flush` (or `finish`)."""
        if not chunk or self.finished or self.method == b"HEAD":
            return
        if self.chunked_out:
            self._pending.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            self._pending.append(chunk)

    def flush(self) -> None:
        """Write what is queued, in one write."""
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending = []
            self._protocol.write(data)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.chunked_out and self.method != b"HEAD":
            self._pending.append(b"0\r\n\r\n")
        self.flush()
        self._protocol.exchange_done(self)

    def respond(
        self,
        status: int,
        headers: list[Header],
        body: bytes = b"",
        *,
        cors: list[Header] | None = None,
    ) -> None:
        self.send_head(status, headers, length=len(body), cors=cors)
        self.send(body)
        self.finish()

    def abort(self) -> None:
        """Cut the connection: the client must not take a broken response for a whole one."""
        if self.finished:
            return
        self.finished = True
        self.aborted = True
        self._protocol.exchange_done(self)
