"""An upstream that speaks HTTP/1.1 by hand, for behaviour no framework server shows on demand:
closing a kept-alive connection without a word, answering before reading the body, dying
mid-head or mid-body.

Each connection runs `behaviour(conn)`; `conn.request()` reads one request (head and a
Content-Length body, unless told not to), `conn.send()` writes bytes, `conn.close()` ends
it. Everything received on a connection is kept in `conn.received`, so a test can tell
which connection carried which request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["RawConn", "RawRequest", "RawUpstream", "answer"]


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawConn:
    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: bytearray = field(default_factory=bytearray)
    requests: list[RawRequest] = field(default_factory=list)

    async def request(self, *, read_body: bool = True) -> RawRequest | None:
        """The next request on this connection, or None when the peer closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError):
                self.received += exc.partial
            return None
        self.received += head
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if read_body and "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
            self.received += body
        request = RawRequest(method, target, headers, body)
        self.requests.append(request)
        return request

    async def drain_forever(self) -> None:
        """Keep reading (and recording) whatever arrives, answering nothing."""
        with contextlib.suppress(ConnectionError):
            while data := await self.reader.read(65536):
                self.received += data

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


def answer(status: int, body: bytes = b"", *, extra: bytes = b"") -> bytes:
    """A kept-alive answer with a Content-Length."""
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b" % (
        status,
        len(body),
        extra,
        body,
    )


Behaviour = Callable[[RawConn], Awaitable[None]]


class RawUpstream:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections: list[RawConn] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        # Closing each connection ends its behaviour (its reads see the end); cancelling the
        # tasks instead would make asyncio log them as errors.
        for conn in self.connections:
            conn.writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConn(len(self.connections), reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.behaviour(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def carrying(self, needle: bytes) -> list[int]:
        """The numbers of the connections whose received bytes contain `needle`."""
        return [c.number for c in self.connections if needle in c.received]
