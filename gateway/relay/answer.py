"""A provider's answer as it arrives on a pooled connection: read whole or streamed.

The `ResponseSink` of one call (`gateway.wire.client`): it holds the head, buffers a whole
answer up to `MAX_ANSWER`, or hands chunks on as they come with back-pressure; a provider
that stops sending mid-answer for `stall` seconds is cut off. `release()` gives the
connection back, kept only after a complete answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.wire.client import ClientConnection, UpstreamBroke
from gateway.wire.heads import Header
from gateway.wire.pool import Pool

__all__ = ["MAX_ANSWER", "ProviderAnswer"]

# A provider's whole (non-streamed) answer is read into memory up to this size.
MAX_ANSWER = 16 * 1024 * 1024


class ProviderAnswer:
    """A provider's answer as it arrives (the `ResponseSink` of one call)."""

    def __init__(self, pool: Pool, conn: ClientConnection, *, stall: float) -> None:
        loop = asyncio.get_running_loop()
        self._pool = pool
        self._conn = conn
        self._stall = stall
        self.head: asyncio.Future[int] = loop.create_future()
        self.status = 0
        self.headers: list[Header] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self.complete = False
        self.failed: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_chunk: Callable[[bytes], None] | None = None
        self._on_end: Callable[[BaseException | None], None] | None = None
        self._on_flush: Callable[[], None] | None = None
        self._released = False
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def content_type(self) -> str:
        for key, value in self.headers:
            if key == b"content-type":
                return value.split(b";", 1)[0].strip().decode("latin-1").lower()
        return ""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    # -- ResponseSink -------------------------------------------------------------------------

    def response_head(self, status: int, headers: list[Header], keep_alive: bool) -> None:
        self.status, self.headers = status, headers
        if not self.head.done():
            self.head.set_result(status)
        self._arm()

    def response_body(self, chunk: bytes) -> None:
        self._arm()
        if self._on_chunk is not None:
            self._on_chunk(chunk)
            return
        self._size += len(chunk)
        if self._size > MAX_ANSWER:
            self._conn.close()
            return
        self._chunks.append(chunk)

    def response_flush(self) -> None:
        if self._on_flush is not None:
            self._on_flush()
        self._wake()

    def response_end(self) -> None:
        self.complete = True
        self._finish(None)

    def response_failed(self, exc: BaseException) -> None:
        self.failed = exc
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # nobody may be waiting any more
        self._finish(exc)

    def upstream_paused(self) -> None:
        pass  # the request body is written in one piece

    def upstream_resumed(self) -> None:
        pass

    # -- the caller's side --------------------------------------------------------------------

    async def read(self, limit: int = MAX_ANSWER) -> bytes:
        """The whole body; `UpstreamBroke` if it breaks off or passes `limit`."""
        while not self.complete:
            if self.failed is not None:
                raise UpstreamBroke(str(self.failed))
            if self._size > limit:
                raise UpstreamBroke("the answer is too large")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return b"".join(self._chunks)

    def stream(
        self,
        on_chunk: Callable[[bytes], None],
        on_end: Callable[[BaseException | None], None],
        on_flush: Callable[[], None],
    ) -> None:
        """Hand every chunk to `on_chunk` as it comes, `on_flush` after each read, then end."""
        chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            on_chunk(chunk)
        if self.complete or self.failed is not None:
            on_end(self.failed)
            return
        self._on_chunk, self._on_end, self._on_flush = on_chunk, on_end, on_flush
        if chunks:
            on_flush()

    def pause(self) -> None:
        self._conn.pause_reading()

    def resume(self) -> None:
        self._conn.resume_reading()

    def release(self) -> None:
        """Give the connection back (kept only after a complete answer)."""
        if not self._released:
            self._released = True
            if self._timer is not None:
                self._timer.cancel()
            self._pool.release(self._conn, reuse=self.complete and self.failed is None)

    # -- internals ----------------------------------------------------------------------------

    def _finish(self, failure: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(failure)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _arm(self) -> None:
        """A provider that stops sending mid-answer for `stall` seconds is cut off."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self._stall
        if self._timer is None and not self.complete:
            self._timer = loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.complete or self.failed is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expire)
            return
        self.failed = TimeoutError("the provider stopped sending")
        self._conn.close()
