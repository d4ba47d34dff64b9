"""UI sessions: bounded in number and in time, shared by processes, never stored in clear."""

from __future__ import annotations

import stat
from pathlib import Path

from gateway.ui.sessions import SESSIONS_FILE, SessionStore

TOKEN = "admin-token-for-session-tests"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_oldest_session_ends_when_too_many_are_open(tmp_path: Path) -> None:
    """At most `max_sessions`: a new login ends the least recently used one."""
    clock = Clock()
    store = SessionStore(tmp_path, TOKEN, max_sessions=3, clock=clock)
    opened = []
    for _ in range(4):
        opened.append(store.open("127.0.0.1").cookie)
        clock.now += 1
    assert store.find(opened[0]) is None
    assert all(store.find(c) is not None for c in opened[1:])
    assert store.count() == 3


def test_an_idle_session_ends_and_a_used_one_lives_to_its_maximum_age(tmp_path: Path) -> None:
    """Idle past the timeout: gone. Used every few minutes: alive, until the maximum age."""
    clock = Clock()
    store = SessionStore(tmp_path, TOKEN, idle_timeout=600, max_age=3600, clock=clock)
    idle, busy = store.open(None).cookie, store.open(None).cookie
    for _ in range(5):
        clock.now += 300
        assert store.find(busy) is not None
    assert store.find(idle) is None
    clock.now += 300 * 7  # 3600 s after login, although used 5 minutes ago
    assert store.find(busy) is None


def test_another_process_sees_logins_and_logouts(tmp_path: Path) -> None:
    """Two stores on one data dir (two workers): what one opens or closes, the other sees."""
    first, second = SessionStore(tmp_path, TOKEN), SessionStore(tmp_path, TOKEN)
    cookie = first.open("127.0.0.1").cookie
    seen_first, seen_second = first.find(cookie), second.find(cookie)
    assert seen_first is not None and seen_second is not None
    assert seen_first.csrf == seen_second.csrf
    second.close(cookie)
    assert first.find(cookie) is None


def test_a_different_admin_token_knows_no_session(tmp_path: Path) -> None:
    """A gateway restarted with a new admin token does not honour the old token's sessions."""
    cookie = SessionStore(tmp_path, TOKEN).open(None).cookie
    assert SessionStore(tmp_path, "another-admin-token").find(cookie) is None


def test_the_file_holds_no_cookie_and_is_private(tmp_path: Path) -> None:
    """Only a hash of each cookie is kept, in a 0600 file."""
    cookie = SessionStore(tmp_path, TOKEN).open("127.0.0.1").cookie
    path = tmp_path / SESSIONS_FILE
    assert cookie not in path.read_text()
    assert TOKEN not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_file_ends_every_session_and_admits_no_one(tmp_path: Path) -> None:
    """Garbage in the file is no session (and no crash); the next login starts afresh."""
    store = SessionStore(tmp_path, TOKEN)
    cookie = store.open(None).cookie
    (tmp_path / SESSIONS_FILE).write_text('{"sessions": [1, 2]')
    assert store.find(cookie) is None
    assert store.find("anything") is None
    assert store.find(store.open(None).cookie) is not None


def test_the_csrf_token_belongs_to_its_session(tmp_path: Path) -> None:
    """Each session has its own token; it is not the cookie, and a wrong one never matches."""
    store = SessionStore(tmp_path, TOKEN)
    one, two = store.open(None), store.open(None)
    assert one.csrf != two.csrf and one.csrf != one.cookie
    assert one.csrf_matches(one.csrf)
    assert not one.csrf_matches(two.csrf)
    assert not one.csrf_matches(None) and not one.csrf_matches("")


def test_made_up_or_oversized_cookies_find_nothing(tmp_path: Path) -> None:
    """Only a cookie the store gave out finds a session."""
    store = SessionStore(tmp_path, TOKEN)
    store.open(None)
    for cookie in (None, "", "x" * 10_000, "not-a-session"):
        assert store.find(cookie) is None
