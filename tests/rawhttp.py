"""A raw HTTP/1.1 client over one TCP connection, for tests that must see the wire itself.

Client libraries fix up what these tests are about (framing, pipelining, `Expect`, odd
targets, half-sent requests), so the front's edges are tested with bytes: `send` writes
exactly what it is given, and `response` reads one answer as the server framed it, keeping
the raw body bytes (chunk sizes included) next to the decoded body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["Raw", "RawResponse", "raw"]

TIMEOUT = 5.0


@dataclass
class RawResponse:
    version: bytes
    status: int
    # Names lower-cased, values as received, in order.
    headers: list[tuple[bytes, bytes]]
    # The body as the client would take it (de-chunked), and the bytes that carried it.
    body: bytes = b""
    wire: bytes = b""
    # False when the connection ended before the framing said the body was complete.
    whole: bool = True
    chunked: bool = False
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    def all(self, name: str) -> list[str]:
        key = name.lower().encode()
        return [v.decode("latin-1") for k, v in self.headers if k == key]


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def half_close(self) -> None:
        """Send FIN: nothing more comes from the client, but it still reads."""
        self.writer.write_eof()

    def abort(self) -> None:
        """Reset the connection (the client vanishes)."""
        self.writer.transport.abort()

    async def response(self, *, head_request: bool = False, within: float = TIMEOUT) -> RawResponse:
        """The next response (1xx ones included), read as its framing says."""
        async with asyncio.timeout(within):
            return await self._response(head_request)

    async def final(self, *, head_request: bool = False, within: float = TIMEOUT) -> RawResponse:
        """The next non-informational response."""
        while True:
            answer = await self.response(head_request=head_request, within=within)
            if answer.status >= 200:
                return answer

    async def closed(self, within: float = TIMEOUT) -> bytes:
        """Everything left until the server closes; fails if it does not close in time."""
        async with asyncio.timeout(within):
            return await self.reader.read()

    async def silent(self, seconds: float) -> bool:
        """True when the server neither sends a byte nor closes for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(1)
        except TimeoutError:
            return True
        # Put nothing back: a test asking this expects no answer at all.
        assert not data, f"unexpected bytes: {data!r}"
        return False

    async def _response(self, head_request: bool) -> RawResponse:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        version, status, *_ = lines[0].split(b" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        answer = RawResponse(version, int(status), headers)
        code = answer.status
        if head_request or code < 200 or code in (204, 304):
            return answer
        encoding = answer.header("transfer-encoding")
        length = answer.header("content-length")
        if encoding is not None and "chunked" in encoding.lower():
            answer.chunked = True
            await self._chunked(answer)
        elif length is not None:
            data = await self._exactly(int(length), answer)
            answer.body += data
        else:
            data = await self.reader.read()
            answer.body = answer.wire = data
        return answer

    async def _exactly(self, n: int, answer: RawResponse) -> bytes:
        try:
            data = await self.reader.readexactly(n)
        except asyncio.IncompleteReadError as exc:
            answer.whole = False
            data = exc.partial
        answer.wire += data
        return data

    async def _chunked(self, answer: RawResponse) -> None:
        while True:
            try:
                line = await self.reader.readuntil(b"\r\n")
            except asyncio.IncompleteReadError as exc:
                answer.wire += exc.partial
                answer.whole = False
                return
            answer.wire += line
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            answer.body += await self._exactly(size, answer)
            if not answer.whole:
                return
            crlf = await self._exactly(2, answer)
            if crlf != b"\r\n" or not answer.whole:
                answer.whole = False
                return
        while True:
            try:
                line = await self.reader.readuntil(b"\r\n")
            except asyncio.IncompleteReadError as exc:
                answer.wire += exc.partial
                answer.whole = False
                return
            answer.wire += line
            if line == b"\r\n":
                return
            name, _, value = line[:-2].partition(b":")
            answer.trailers.append((name.strip().lower(), value.strip()))


@contextlib.asynccontextmanager
async def raw(port: int, host: str = "127.0.0.1") -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
