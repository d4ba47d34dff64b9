"""The W3C Baggage members the gateway writes (proxy) and reads back (relay).

Upstream, a forwarded request's `baggage` holds only our members: `powermem.nonce` (always:
it proves the request came through the gateway, see `gateway.proxy.ledger`) and
`powermem.instance` (when the request is bound to an instance). Whatever baggage a client
sent is dropped, because powermem hands the whole header on to its LLM and embedding calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["INSTANCE", "NONCE", "baggage_header", "gateway_members", "instance_from_baggage"]

INSTANCE = "powermem.instance"
NONCE = "powermem.nonce"
MAX_BAGGAGE = 8192


def baggage_header(instance_id: str | None, nonce: str | None = None) -> str:
    members = []
    if instance_id is not None:
        members.append(f"{INSTANCE}={instance_id}")
    if nonce is not None:
        members.append(f"{NONCE}={nonce}")
    return ",".join(members)


def gateway_members(values: Iterable[str]) -> tuple[str | None, str | None]:
    """(`powermem.instance`, `powermem.nonce`) from one or more `baggage` headers.

    A member given twice with different values makes both unusable: a caller must not be able
    to pick which one a reader sees.
    """
    found: dict[str, str | None] = {}
    for header in values:
        if len(header) > MAX_BAGGAGE:
            continue
        for member in header.split(","):
            key, sep, rest = member.partition("=")
            key = key.strip()
            if not sep or key not in (INSTANCE, NONCE):
                continue
            # Properties follow the value after ';'; values are percent-encoded.
            value = unquote(rest.split(";", 1)[0].strip()) or None
            if key in found and found[key] != value:
                found[key] = None
                continue
            found.setdefault(key, value)
    return found.get(INSTANCE), found.get(NONCE)


def instance_from_baggage(values: list[str]) -> str | None:
    """`powermem.instance` alone (for callers that do not check the nonce)."""
    return gateway_members(values)[0]
