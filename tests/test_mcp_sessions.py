"""MCP sessions keep one ledger entry for all their requests, and let go of it when they end."""

from __future__ import annotations

import pytest

from gateway.proxy.ledger import Ledger
from gateway.proxy.mcp import McpSessions, is_mcp


@pytest.fixture
def ledger() -> Ledger:
    return Ledger.anonymous(slots=8)


def test_requests_of_one_session_share_the_nonce_of_the_request_that_opened_it(
    ledger: Ledger,
) -> None:
    """After `adopt`, the session's requests for the same instance get that same entry."""
    sessions = McpSessions(ledger)
    opening = ledger.issue("pmem-0123456789abcdef")
    assert opening is not None
    assert sessions.adopt(b"s-1", opening, "pmem-0123456789abcdef")
    assert sessions.entry_for(b"s-1", "pmem-0123456789abcdef") is opening
    # The nonce stays in flight for the relay, however long the session lasts.
    assert ledger.find(opening.nonce, "pmem-0123456789abcdef") is not None


def test_another_instance_in_the_same_session_gets_no_shared_entry(ledger: Ledger) -> None:
    """A session id never lends its nonce to a request bound to another instance."""
    sessions = McpSessions(ledger)
    opening = ledger.issue("pmem-aaaaaaaaaaaaaaaa")
    assert opening is not None
    sessions.adopt(b"s-1", opening, "pmem-aaaaaaaaaaaaaaaa")
    assert sessions.entry_for(b"s-1", "pmem-bbbbbbbbbbbbbbbb") is None
    assert sessions.entry_for(b"s-1", None) is None


def test_ending_a_session_makes_its_nonce_stale(ledger: Ledger) -> None:
    """`DELETE /mcp` (the client ends the session) frees the entry; the relay refuses it."""
    sessions = McpSessions(ledger)
    opening = ledger.issue(None)
    assert opening is not None
    sessions.adopt(b"s-1", opening, None)
    sessions.end(b"s-1")
    assert ledger.find(opening.nonce, None) is None
    assert ledger.in_flight == 0


def test_idle_sessions_and_the_oldest_beyond_the_limit_are_let_go(ledger: Ledger) -> None:
    """Sessions are bounded in time and in number; nothing is held forever."""
    sessions = McpSessions(ledger, idle=0.0, limit=2)
    first = ledger.issue(None)
    assert first is not None
    sessions.adopt(b"old", first, None)
    assert sessions.entry_for(b"old", None) is None  # idle for longer than 0 s
    assert ledger.in_flight == 0
    bounded = McpSessions(ledger, limit=2)
    for name in (b"a", b"b", b"c"):
        entry = ledger.issue(None)
        assert entry is not None
        bounded.adopt(name, entry, None)
    assert len(bounded) == 2
    assert ledger.in_flight == 2
    assert bounded.entry_for(b"a", None) is None


def test_a_session_id_is_adopted_once_and_only_if_sane(ledger: Ledger) -> None:
    """A second adoption of one id, an empty or an oversized id, are refused."""
    sessions = McpSessions(ledger)
    entry = ledger.issue(None)
    assert entry is not None
    assert not sessions.adopt(b"", entry, None)
    assert not sessions.adopt(b"x" * 300, entry, None)
    assert sessions.adopt(b"s", entry, None)
    assert not sessions.adopt(b"s", entry, None)


def test_only_mcp_paths_are_mcp() -> None:
    """`/mcp` and below, in any case; nothing else."""
    assert is_mcp("/mcp") and is_mcp("/MCP/") and is_mcp("/mcp/messages")
    assert not is_mcp("/mcpx") and not is_mcp("/api/v1/mcp")
