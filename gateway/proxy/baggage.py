"""The one W3C Baggage member the gateway writes (proxy) and reads back (relay)."""

from __future__ import annotations

from urllib.parse import unquote

__all__ = ["MEMBER", "baggage_header", "instance_from_baggage"]

MEMBER = "powermem.instance"
MAX_BAGGAGE = 8192


def baggage_header(instance_id: str) -> str:
    return f"{MEMBER}={instance_id}"


def instance_from_baggage(values: list[str]) -> str | None:
    """`powermem.instance` from one or more `baggage` headers (W3C Baggage list syntax)."""
    for header in values:
        if len(header) > MAX_BAGGAGE:
            continue
        for member in header.split(","):
            key, sep, rest = member.partition("=")
            if sep and key.strip() == MEMBER:
                # Properties follow the value after ';'; values are percent-encoded.
                return unquote(rest.split(";", 1)[0].strip()) or None
    return None
