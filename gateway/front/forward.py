"""Stream one exchange through one pooled upstream connection, and the answer back.

Bodies pass as bytes, never decoded: a gzip body arrives upstream exactly as the client sent
it, with its own `Content-Encoding` and a length that matches. A body up to `REPLAY_LIMIT`
with a known length is read first and sent with the head in one write, which also makes it
replayable: when a pooled connection turns out to have been closed by the server between
requests (powermem closes some connections after an answer without saying so), and nothing
of the answer has arrived, the request goes once more on a fresh connection instead of
becoming an error. A larger or chunked body is streamed, always on a fresh connection.

Failures before the client has seen a status line become errors in the envelope (502 for an
unreachable or broken upstream, 503 when every connection is busy, 504 after `timeout`);
after it, the client's connection is cut so a truncated answer is never taken as whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.front.exchange import BodyBroken, BodyTooLarge, Exchange
from gateway.wire.client import ClientConnection, UpstreamBroke
from gateway.wire.heads import HOP_BY_HOP, Header, connection_tokens, request_head
from gateway.wire.pool import Pool, PoolBusy, PoolClosed

__all__ = ["REPLAY_LIMIT", "Forwarded", "UpstreamBusy", "forward"]

REPLAY_LIMIT = 1024 * 1024
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class UpstreamBusy(GatewayError):
    """Every connection to the upstream is taken (long streams, a flood)."""

    status = 503
    code = "UPSTREAM_BUSY"


@dataclass(slots=True)
class Forwarded:
    """How it went, for the caller's accounting."""

    status: int = 0
    # True when the client got a whole answer.
    whole: bool = False


# The caller's last word on the response head: (status, headers) → headers to send.
HeadRewrite = Callable[[int, list[Header]], list[Header]]


class _Exchange:
    """The `ResponseSink` for one attempt: head and end as futures, body straight through."""

    def __init__(self, client: Exchange, conn: ClientConnection, rewrite: HeadRewrite) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.conn = conn
        self.rewrite = rewrite
        self.head: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()

    def response_head(self, status: int, headers: list[Header], keep_alive: bool) -> None:
        client = self.client
        drop = HOP_BY_HOP | connection_tokens(headers)
        length: int | None = None
        out: list[Header] = []
        chunked = False
        for key, value in headers:
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = True
            if key not in drop and key not in _FRAMING:
                out.append((key, value))
        if chunked:
            length = None
        out = self.rewrite(status, out)
        if not client.gone:
            client.send_head(status, out, length=length)
            client.on_drain = (self.conn.pause_reading, self.conn.resume_reading)
            if client.paused:
                self.conn.pause_reading()
        if not self.head.done():
            self.head.set_result(status)

    def response_body(self, chunk: bytes) -> None:
        self.client.send(chunk)

    def response_flush(self) -> None:
        self.client.flush()

    def response_end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def response_failed(self, exc: BaseException) -> None:
        for future in (self.head, self.done):
            if not future.done():
                future.set_exception(exc)
                # Nobody awaits it when the forwarder has already given up (a timeout).
                future.exception()
                return

    def upstream_paused(self) -> None:
        self.client.body.pause()

    def upstream_resumed(self) -> None:
        self.client.body.resume()


async def forward(
    client: Exchange,
    pool: Pool,
    *,
    target: bytes,
    headers: list[Header],
    rewrite: HeadRewrite,
    timeout: float,  # noqa: ASYNC109 - the head deadline, one timer per exchange
    name: str = "powermem",
) -> Forwarded:
    """Send `client`'s request (with `headers`, already rewritten) to the pool's origin."""
    result = Forwarded()
    body = client.body
    if body.failed is not None:
        return _body_failed(client)
    replayable = not body.chunked and (body.length or 0) <= REPLAY_LIMIT
    payload = b""
    if replayable and body.present:
        try:
            payload = await body.read(REPLAY_LIMIT)
        except (BodyBroken, BodyTooLarge):
            return _body_failed(client)
    framing: list[Header]
    if replayable:
        framing = [(b"content-length", str(len(payload)).encode())] if body.present else []
    elif body.chunked:
        framing = [(b"transfer-encoding", b"chunked")]
    else:
        framing = [(b"content-length", str(body.length).encode())]
    head = request_head(client.method, target, [*headers, *framing])
    attempt = 0
    while True:
        attempt += 1
        conn = await _acquire(pool, fresh=not replayable or attempt > 1, name=name)
        sink = _Exchange(client, conn, rewrite)
        client.on_gone = conn.close
        conn.send(sink, head + payload if payload else head, head_request=client.method == b"HEAD")
        if not replayable:
            _stream_body(client, conn)
        timer = asyncio.get_running_loop().call_later(timeout, _expire, sink.head)
        try:
            result.status = await sink.head
        except UpstreamBroke as exc:
            pool.release(conn, reuse=False)
            if client.gone:
                return result
            if body.failed is not None:
                return _body_failed(client)  # we closed the connection: the body broke
            # Retry only what never reached powermem's handling: a reused connection that
            # answered nothing, with a body we still hold.
            if replayable and attempt == 1 and conn.requests > 1 and not conn.responded:
                continue
            raise UpstreamUnavailable(
                f"The {name} server closed the connection without answering ({exc}); "
                "check its log, or run `powermem-gateway doctor`."
            ) from None
        except TimeoutError:
            pool.release(conn, reuse=False)
            raise UpstreamTimeout(
                f"{name} did not answer within {timeout:g}s; retry, or raise "
                "--upstream-timeout if its LLM calls are slow."
            ) from None
        finally:
            timer.cancel()
        break
    try:
        await sink.done
    except UpstreamBroke:
        pool.release(conn, reuse=False)
        client.abort()
        return result
    finally:
        client.on_drain = None
        client.on_gone = None
    # A streamed body that did not reach its end (powermem answered early) leaves the
    # connection expecting the rest: the next request sent on it would be read as body bytes.
    pool.release(conn, reuse=not client.gone and (replayable or body.complete))
    result.whole = not client.gone
    client.finish()
    return result


def _body_failed(client: Exchange) -> Forwarded:
    """The request body broke (malformed, stalled, abandoned): nothing of it counts. The
    client hears why if it is still there to (400, 408); otherwise the connection is cut."""
    failed = client.body.failed
    if isinstance(failed, BodyBroken) and failed.answer is not None and not client.gone:
        raise failed.answer
    client.abort()
    return Forwarded()


def _expire(future: asyncio.Future[int]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


async def _acquire(pool: Pool, *, fresh: bool, name: str) -> ClientConnection:
    try:
        return await pool.acquire(fresh=fresh)
    except PoolBusy:
        raise UpstreamBusy(
            f"Every connection to {name} is in use; retry shortly.",
            headers={"Retry-After": "1"},
        ) from None
    except (OSError, TimeoutError, PoolClosed) as exc:
        raise UpstreamUnavailable(
            f"Cannot reach the {name} server ({type(exc).__name__}); check that it is "
            "running, or run `powermem-gateway doctor`."
        ) from None


def _stream_body(client: Exchange, conn: ClientConnection) -> None:
    chunked = client.body.chunked

    def on_chunk(chunk: bytes) -> None:
        conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)

    def on_end(failure: BaseException | None) -> None:
        if failure is not None:
            conn.close()  # the request is incomplete: powermem must not act on a part of it
            return
        if chunked:
            conn.write(b"0\r\n\r\n")

    client.body.stream(on_chunk, on_end)
