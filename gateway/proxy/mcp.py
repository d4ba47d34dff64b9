"""MCP sessions keep one nonce for all their requests.

powermem's MCP endpoint (streamable HTTP) runs a session's tool calls inside a session task
that outlives the HTTP request which started the session, and a tool's LLM call does not
always carry the baggage of the request that delivered the call: under load it may carry that
of an earlier request of the same session (the one that opened it, or a notification answered
with 202 long before). With a nonce per request that earlier nonce is stale by then, and the
relay rightly refuses the call. So every request of one MCP session (`Mcp-Session-Id`) that
this worker serves, for one instance, reuses the ledger entry of the request that opened the
session: whichever of them a tool call's baggage comes from, the nonce is in flight for as
long as the session is. The entry goes when the client ends the session (`DELETE`), or after
`idle` seconds without a request; at most `limit` sessions are held, the least recently used
going first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from gateway.proxy.ledger import Entry, Ledger

__all__ = ["SESSION_HEADER", "McpSessions", "is_mcp"]

SESSION_HEADER = b"mcp-session-id"
MAX_SESSION_ID = 256


def is_mcp(path: str) -> bool:
    lowered = path.lower()
    return lowered == "/mcp" or lowered.startswith("/mcp/")


@dataclass(slots=True)
class _Session:
    entry: Entry
    instance_id: str | None
    used: float


class McpSessions:
    def __init__(self, ledger: Ledger, *, idle: float = 3600.0, limit: int = 1024) -> None:
        self._ledger = ledger
        self._idle = idle
        self._limit = limit
        self._held: OrderedDict[bytes, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def entry_for(self, session_id: bytes, instance_id: str | None) -> Entry | None:
        """The session's entry, if this worker holds one for this very instance."""
        self._sweep()
        session = self._held.get(session_id)
        if session is None or session.instance_id != instance_id:
            return None
        session.used = time.monotonic()
        self._held.move_to_end(session_id)
        return session.entry

    def holds(self, entry: Entry) -> bool:
        return any(s.entry is entry for s in self._held.values())

    def adopt(self, session_id: bytes, entry: Entry, instance_id: str | None) -> bool:
        """Keep `entry` for the session its request just opened; False when it cannot be."""
        if not session_id or len(session_id) > MAX_SESSION_ID or session_id in self._held:
            return False
        self._held[session_id] = _Session(entry, instance_id, time.monotonic())
        while len(self._held) > self._limit:
            _, oldest = self._held.popitem(last=False)
            self._ledger.release(oldest.entry)
        return True

    def end(self, session_id: bytes) -> None:
        """The client ended the session: its nonce is stale from now on."""
        session = self._held.pop(session_id, None)
        if session is not None:
            self._ledger.release(session.entry)

    def close(self) -> None:
        for session in self._held.values():
            self._ledger.release(session.entry)
        self._held.clear()

    def _sweep(self) -> None:
        cutoff = time.monotonic() - self._idle
        while self._held:
            session_id, oldest = next(iter(self._held.items()))
            if oldest.used >= cutoff:
                return
            del self._held[session_id]
            self._ledger.release(oldest.entry)
