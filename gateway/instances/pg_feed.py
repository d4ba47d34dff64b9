"""Which instances changed, told to every replica on a PostgreSQL registry: the change feed.

The counterpart of the change file (gateway.instances.changes) across hosts. Each process
keeps one extra connection, on a thread of its own, that LISTENs for the notices the store
sends inside every writing transaction (gateway.instances.pg_keys.announce_keys): a sequence
number and the keys it changed. The thread appends them to a ring and moves this process's
counter; the cache (gateway.instances.cache) drops those keys on its next lookup, exactly as
with the change file. Why a change answered on one replica is never served stale by another:

- **Confirmations.** A caching process confirms every sequence number it has taken in (a
  NOTIFY back, sent only after its counter moved). A writer, after its commit and before it
  answers, waits until every caching process that is alive has confirmed its change.
- **Leases.** A process may serve from its cache only while its lease holds: every
  `HEARTBEAT` seconds it tells the database it is alive and reads the committed sequence
  number; the lease lasts `LEASE` seconds from when that heartbeat was *sent*. Had a notice
  been missed (a dropped connection, a notice lost), the heartbeat finds the counter ahead and
  reads what it missed from the `changes` table before renewing, so a missed notification is
  harmless. A writer waits at most `LEASE + GRACE` for a process that does not confirm: by
  then that process's lease, taken before the commit, has run out, and its next one sees the
  change. A process that loses the database loses its lease at once: lookups go to the
  store, which answers 503 with Retry-After until the database is back, never a stale record.
- Which processes are alive is the database's own view: rows of `caches` with a recent
  heartbeat whose connection still exists (`pg_stat_activity`), so a replica killed with
  `kill -9` stops being waited for as soon as the server sees its connection close.

With `cache=False` (`POWERMEM_GATEWAY_REGISTRY_CACHE=off`) this process caches nothing and reads
one indexed row per bound request; it still waits for the caching processes when it writes, so
a mixed cluster keeps the guarantee.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from gateway.errors import StorageError
from gateway.instances.pg_db import CHANGES_CHANNEL, CONNECT_TIMEOUT, connect
from gateway.instances.pg_store import PgStore

__all__ = ["ACKS_CHANNEL", "GRACE", "HEARTBEAT", "LEASE", "ChangeFeed"]

log = logging.getLogger("gateway.registry")

ACKS_CHANNEL = "powermem_gateway_acks"
HEARTBEAT = 0.5  # seconds between two heartbeats of a caching process
LEASE = 2.0  # seconds a heartbeat lets a process serve from its cache
GRACE = 0.5  # more seconds a writer waits for a silent process, for clock-rate drift
RING = 4096  # changes remembered for the cache to catch up with; further behind drops all
_POLL = 0.1  # how often the feed thread looks up from waiting (for close and heartbeats)
ALL = "*"


class ChangeFeed:
    """This process's end of the feed: the `Changes` the registry's cache reads and writes by."""

    def __init__(self, store: PgStore, *, cache: bool = True, holder: str | None = None) -> None:
        self._store = store
        self._cache = cache
        self.holder = holder or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.written_at: int | None = None
        # Seconds the last write waited for every caching process to confirm (benchmarks).
        self.last_wait = 0.0
        self._seen: int | None = None  # the last sequence number taken in
        self._lease_until = 0.0  # monotonic; caching only before it
        self._ring: deque[tuple[int, tuple[str, ...]]] = deque(maxlen=RING)
        self._ring_lock = threading.Lock()
        self._acks: dict[str, int] = {}
        self._acked = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._warned = False
        self._thread = self._start()
        # The first lookups may cache once the feed is up; a slow server just means misses.
        self._ready.wait(CONNECT_TIMEOUT)

    def _start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="registry-feed", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CONNECT_TIMEOUT + 1)

    @property
    def caching(self) -> bool:
        """Whether this process may serve from its cache right now (the lease holds)."""
        return self._cache and time.monotonic() < self._lease_until

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    # -- what the cache reads (the event loop) ------------------------------------------------

    def read(self) -> int | None:
        """The last sequence number taken in, or None: do not serve from the cache now."""
        if not self._cache or time.monotonic() >= self._lease_until:
            return None
        return self._seen

    def since(self, seen: int, now: int) -> set[str] | None:
        """The keys changed after `seen` up to `now`; None means "assume everything"."""
        keys: set[str] = set()
        with self._ring_lock:
            if not self._ring or self._ring[0][0] > seen + 1:
                return None
            for seq, changed in reversed(self._ring):
                if seq <= seen:
                    break
                if seq > now:
                    continue
                if ALL in changed:
                    return None
                keys.update(changed)
        return keys

    def check(self) -> None:
        """Housekeeping: a feed thread that died (it should not) is started again."""
        if not self._thread.is_alive() and not self._stop.is_set():
            log.error("the registry's change feed stopped; starting it again")
            self._thread = self._start()

    # -- what a writer does (the registry's worker thread) ------------------------------------

    @contextmanager
    def shared(self) -> Iterator[int | None]:
        """The counter a cache miss is read at; fills land only if nothing moved since."""
        yield self.read()

    @contextmanager
    def exclusive(self) -> Iterator[ChangeFeed]:
        """Around one write: afterwards, every caching process has dropped what it changed."""
        before = self.read()
        self._store.committed_seq = None
        yield self
        seq = self._store.committed_seq
        if seq is None:  # nothing committed: what the write read is as fresh as a read
            self.written_at = before
            return
        self._await_confirmations(seq)
        self.written_at = seq

    def changed(self, instance_ids: object, digests: object) -> None:
        """The store records and notifies its changes itself, in its own transaction."""

    def changed_all(self) -> None:
        """As `changed`."""

    def _await_confirmations(self, seq: int) -> None:
        started = time.monotonic()
        deadline = started + LEASE + GRACE
        try:
            holders = self._store.database.all(
                "SELECT holder FROM caches c WHERE heartbeat_at > now() - make_interval(secs => "
                "%s) AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.backend_pid)",
                (LEASE + GRACE,),
            )
        except StorageError:
            holders = None  # cannot tell who caches: wait until every lease has run out
        with self._acked:
            while True:
                missing = (
                    None
                    if holders is None
                    else [h for (h,) in holders if self._acks.get(h, -1) < seq]
                )
                left = deadline - time.monotonic()
                if missing == [] or left <= 0:
                    break
                self._acked.wait(left)
        self.last_wait = time.monotonic() - started
        if missing:
            log.warning(
                "registry change %d: %d caching process(es) did not confirm within %.1fs; "
                "their leases have run out, so they cannot serve what changed",
                seq,
                len(missing),
                LEASE + GRACE,
            )

    # -- the feed thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = connect(self._store.url, application="powermem-gateway feed")
            except psycopg.Error as exc:
                self._lost(exc)
                self._stop.wait(1.0)
                continue
            try:
                self._serve(conn)
            except psycopg.Error as exc:
                self._lost(exc)
            finally:
                self._lease_until = 0.0
                self._ready.clear()
                with suppress(psycopg.Error):
                    if self._cache and not conn.broken:
                        conn.execute("DELETE FROM caches WHERE holder = %s", (self.holder,))
                conn.close()
            self._stop.wait(0.2)

    def _lost(self, exc: psycopg.Error) -> None:
        self._lease_until = 0.0
        if not self._warned:
            self._warned = True
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            log.warning(
                "lost the registry's change feed (%s); bound requests get 503 until it is back",
                reason or type(exc).__name__,
            )

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        # Confirmations are NOTIFYs: no reason to wait for a disk flush for each one.
        conn.execute("SET synchronous_commit TO off")
        conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        conn.execute(f"LISTEN {ACKS_CHANNEL}")
        self._heartbeat(conn)
        if self._warned:
            log.warning("the registry's change feed is back; lookups are cached again")
            self._warned = False
        self._ready.set()
        next_beat = time.monotonic() + HEARTBEAT
        while not self._stop.is_set():
            wait = min(_POLL, max(0.0, next_beat - time.monotonic()))
            batch = list(conn.notifies(timeout=wait, stop_after=1))
            if batch:
                self._take(conn, batch)
            if time.monotonic() >= next_beat:
                self._heartbeat(conn)
                next_beat = time.monotonic() + HEARTBEAT

    def _heartbeat(self, conn: psycopg.Connection[Any]) -> None:
        sent = time.monotonic()
        if self._cache:
            row = conn.execute(
                "INSERT INTO caches(holder, backend_pid, heartbeat_at) "
                "VALUES (%s, pg_backend_pid(), now()) ON CONFLICT (holder) DO UPDATE SET "
                "backend_pid = excluded.backend_pid, heartbeat_at = excluded.heartbeat_at "
                "RETURNING (SELECT seq FROM change_counter WHERE id = 1)",
                (self.holder,),
            ).fetchone()
        else:
            row = conn.execute("SELECT seq FROM change_counter WHERE id = 1").fetchone()
        if row is None:
            raise psycopg.OperationalError("the registry's change counter is missing")
        if self._catch_up(conn, int(row[0])):
            self._confirm(conn)
        if self._cache:
            self._lease_until = sent + LEASE

    def _take(self, conn: psycopg.Connection[Any], batch: list[psycopg.Notify]) -> None:
        moved = False
        for notice in batch:
            head = notice.payload.rpartition(" ")[2] if notice.channel == ACKS_CHANNEL else ""
            first = notice.payload.split(" ", 1)[0]
            if not (head or first).isdigit():
                continue  # not one of ours (anyone with the database's user can NOTIFY)
            if notice.channel == ACKS_CHANNEL:
                holder, _, confirmed = notice.payload.rpartition(" ")
                with self._acked:
                    if int(confirmed) > self._acks.get(holder, -1):
                        self._acks[holder] = int(confirmed)
                        if len(self._acks) > 4096:  # holders come and go; keep it bounded
                            del self._acks[next(iter(self._acks))]
                    self._acked.notify_all()
                continue
            seq, *keys = notice.payload.split(" ")
            number = int(seq)
            seen = self._seen
            if seen is None or number <= seen:
                continue
            if number == seen + 1 and keys:
                self._advance([(number, tuple(keys))])
            else:
                self._catch_up(conn, number)
            moved = True
        if moved:
            self._confirm(conn)

    def _catch_up(self, conn: psycopg.Connection[Any], upto: int) -> bool:
        """Take in every change up to `upto` from the table; True when the counter moved."""
        seen = self._seen
        if seen is not None and upto == seen:
            return False
        if seen is None or upto < seen:
            # The first look, or a counter that went back (a restored database): drop all.
            self._advance([(upto, (ALL,))])
            return True
        rows = conn.execute(
            "SELECT seq, keys FROM changes WHERE seq > %s AND seq <= %s ORDER BY seq",
            (seen, upto),
        ).fetchall()
        entries = [(int(seq), tuple(keys)) for seq, keys in rows]
        if [seq for seq, _ in entries] != list(range(seen + 1, upto + 1)):
            entries = [(upto, (ALL,))]  # some were pruned: forget everything instead
        self._advance(entries)
        return True

    def _advance(self, entries: list[tuple[int, tuple[str, ...]]]) -> None:
        with self._ring_lock:
            self._ring.extend(entries)
            # The counter moves last: whoever reads it finds its entries in the ring.
            self._seen = entries[-1][0]

    def _confirm(self, conn: psycopg.Connection[Any]) -> None:
        if self._cache and self._seen is not None:
            conn.execute("SELECT pg_notify(%s, %s)", (ACKS_CHANNEL, f"{self.holder} {self._seen}"))
