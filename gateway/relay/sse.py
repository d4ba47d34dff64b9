"""Server-Sent Events: an incremental parser for provider streams, and the writer for ours.

The parser follows the WHATWG event-stream rules: lines end with CRLF, LF or CR, a blank line
dispatches the pending event, `:` starts a comment, unknown fields are ignored, and an event that
is still pending when the stream ends is discarded. Chunks from the socket may split a line, a
CRLF pair or a multi-byte character anywhere, so lines are cut as bytes (CR and LF never occur
inside a UTF-8 sequence) and decoded only once complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser", "format_sse"]

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its name (default `message`), its data lines joined by `\\n`."""

    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Turns bytes chunks, as they arrive, into complete `SSEEvent`s."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._at_start = True
        # A chunk that ends in CR may be the first half of a CRLF pair.
        self._skip_lf = False
        self._event = ""
        self._data: list[str] = []
        self._has_data = False
        # Per the spec the last event id persists across events until a new `id:` field.
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume one chunk and return the events it completed (often none)."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        self._buffer += chunk
        events: list[SSEEvent] = []
        if b"\r" not in self._buffer:
            # What providers send: LF line ends only. One split instead of a search per line.
            *lines, rest = bytes(self._buffer).split(b"\n")
            self._buffer = bytearray(rest)
            for line in lines:
                if (event := self._line(line)) is not None:
                    events.append(event)
            return events
        start = 0
        while (match := _EOL.search(self._buffer, start)) is not None:
            if match.group() == b"\r" and match.end() == len(self._buffer):
                self._skip_lf = True
            line = bytes(self._buffer[start : match.start()])
            start = match.end()
            event = self._line(line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if self._at_start:
            self._at_start = False
            raw = raw.removeprefix(_BOM)
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # `retry` only matters to a reconnecting browser; other fields are ignored by the spec.
        return None

    def _dispatch(self) -> SSEEvent | None:
        event = None
        if self._has_data:
            event = SSEEvent(self._event or "message", "\n".join(self._data), self._last_id)
        self._event = ""
        self._data = []
        self._has_data = False
        return event


def format_sse(data: str, event: str | None = None) -> bytes:
    """Encode one event; multi-line data becomes one `data:` line per line."""
    if event is not None and _EOL.search(event.encode()):
        raise ValueError("an SSE event name cannot contain a line break")
    lines = [f"event: {event}"] if event is not None else []
    lines.extend(f"data: {part}" for part in re.split(r"\r\n|\r|\n", data))
    return ("\n".join(lines) + "\n\n").encode()
