"""Heads as bytes: header lists, hop-by-hop rules, and serialising a head in one piece.

Header names are kept lower-case (HTTP/1.1 names are case-insensitive and httptools hands
them over as sent), values as the exact bytes received. Nothing here decodes a value it does
not need, so a proxied request costs a few list operations, not a header object per request.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

__all__ = [
    "HOP_BY_HOP",
    "Header",
    "connection_tokens",
    "find",
    "request_head",
    "response_head",
]

Header = tuple[bytes, bytes]

# RFC 9110 §7.6.1 hop-by-hop fields, plus `proxy-connection`, which old clients still send.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def find(headers: Iterable[Header], name: bytes) -> bytes | None:
    """The first value of `name` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def connection_tokens(headers: Iterable[Header]) -> frozenset[bytes]:
    """Field names listed in `Connection`: hop-by-hop too (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for key, value in headers:
        if key == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def request_head(method: bytes, target: bytes, headers: Iterable[Header]) -> bytes:
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for key, value in headers:
        parts += (key, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(status: int, headers: Iterable[Header], *, version: bytes = b"1.1") -> bytes:
    reason = _REASONS.get(status, b"Unknown")
    parts = [b"HTTP/", version, b" ", str(status).encode(), b" ", reason, b"\r\n"]
    for key, value in headers:
        parts += (key, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
