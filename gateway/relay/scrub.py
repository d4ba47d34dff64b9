"""Keep an instance's own key out of what its provider sends back, even mid-stream.

A provider may echo what it was sent (a debugging proxy, a misconfigured gateway in front
of it): the key must never travel back to powermem, which could store or log it. A whole
answer is scrubbed at once. A stream is scrubbed event by event: bytes are passed on up to
the last complete server-sent event, so a key split across two network reads is still found,
and no byte waits longer than the event it belongs to.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "StreamScrubber", "scrub"]

REDACTED = b"[redacted]"
# The end of a server-sent event: a blank line, however lines end (CRLF, LF or CR).
_EVENT_END = re.compile(rb"(?:\r\n|\r|\n)(?:\r\n|\r|\n)")
# Keys shorter than this would match ordinary text; no provider issues them.
MIN_SECRET = 8


def scrub(data: bytes, secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET or secret not in data:
        return data
    return data.replace(secret, REDACTED)


class StreamScrubber:
    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """What may be passed on now (complete events, scrubbed); the rest is held."""
        if len(self._secret) < MIN_SECRET:
            return chunk
        data = self._held + chunk
        last = None
        for last in _EVENT_END.finditer(data):  # noqa: B007 - we want the last match
            pass
        if last is None:
            self._held = data
            return b""
        self._held = data[last.end() :]
        return scrub(data[: last.end()], self._secret)

    def end(self) -> bytes:
        held, self._held = self._held, b""
        return scrub(held, self._secret)
