"""Bind a request by its headers the way the front's proxy does, for tests of the rules."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.http.appkeys import LEDGER
from gateway.instances.registry import Registry
from gateway.proxy.baggage import baggage_header, gateway_members
from gateway.proxy.binding import Binding, bind, powermem_headers

__all__ = ["bind_request", "in_flight", "instance_of"]


async def bind_request(headers: Mapping[str, str], registry: Registry) -> Binding | None:
    raw = [
        (k.lower().encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
        for k, v in headers.items()
    ]
    return await bind(powermem_headers(raw), registry)


def instance_of(baggage: str) -> str | None:
    """The `powermem.instance` member of a forwarded request's baggage (which also holds the
    request's nonce)."""
    return gateway_members([baggage])[0]


def in_flight(app: web.Application, instance_id: str | None = None) -> str:
    """The `baggage` of a request the proxy has in flight for this instance (or none), as
    powermem's LLM call would carry it; the slot stays taken for the rest of the test."""
    entry = app[LEDGER].issue(instance_id)
    assert entry is not None
    return baggage_header(instance_id, entry.nonce)
