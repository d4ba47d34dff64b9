"""The `Store` contract: one suite that every store of record passes (SQLite and PostgreSQL).

Each test opens "processes" as separate store handles on one database, the way gateway
workers (or replicas) do; PostgreSQL runs as a real server (tests/servers.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from gateway.errors import ConfigConflict, InstanceCapReached, StorageError
from gateway.files import ensure_private_dir
from gateway.instances.pg_store import PgStore
from gateway.instances.sqlite_store import DB_FILE, SqliteStore
from gateway.instances.store import HOURS_KEPT, Row, Store, UsageDelta

STORES = ["sqlite", "postgresql"]
OpenStore = Callable[[], Store]


class Announcements:
    """A real announcer that writes down what it was told, and can run a check as it is told."""

    def __init__(self, check: Callable[[], None] | None = None) -> None:
        self.changes: list[tuple[list[str], list[str]]] = []
        self.everything = 0
        self._check = check

    def changed(self, instance_ids: Sequence[str], digests: Sequence[str]) -> None:
        self.changes.append((list(instance_ids), list(digests)))
        if self._check is not None:
            self._check()

    def changed_all(self) -> None:
        self.everything += 1
        if self._check is not None:
            self._check()


@pytest.fixture(params=STORES)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens handles on one fresh store; all closed at teardown."""
    opened: list[Store] = []
    data_dir = ensure_private_dir(tmp_path / "data")
    url = request.getfixturevalue("database_url") if request.param == "postgresql" else ""

    def make() -> Store:
        store: Store = PgStore(url) if url else SqliteStore(data_dir)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def stamp(n: int) -> str:
    return f"2026-01-01T00:00:{n:02d}.000Z"


def new_row(
    digest: str, *, client: str = "", provider: str = "openai", n: int = 0, source: str = "api"
) -> Callable[[str, str | None], Row]:
    def build(instance_id: str, master_key_id: str | None) -> Row:
        return Row(
            instance_id=instance_id,
            client=client,
            provider=provider,
            model=f"model-{n}",
            api_key=f"v2.{master_key_id or 'k0'}.cipher-{n}",
            masked_key="sk-t…0000",
            base_url="",
            config_digest=digest,
            created_at=stamp(n),
            updated_at=stamp(n),
            source=source,
        )

    return build


def ids(*names: str) -> Iterator[str]:
    return iter(names)


def create(store: Store, n: int, **kw: str) -> Row:
    row, created = store.create(
        f"digest-{n}",
        ids(f"pmem-{n:016x}"),
        new_row(f"digest-{n}", n=n, **kw),
        announce=Announcements(),
    )
    assert created
    return row


def test_one_configuration_is_one_row(open_store: OpenStore) -> None:
    """Creating the same digest twice finds the first row the second time."""
    store = open_store()
    first, created = store.create("d", ids("pmem-a"), new_row("d"), announce=Announcements())
    again, created_again = store.create(
        "d", ids("pmem-b"), new_row("d", n=1), announce=Announcements()
    )
    assert (created, created_again) == (True, False)
    assert again == first
    assert store.get("pmem-a") == first and store.by_digest("d") == first
    assert store.get("pmem-b") is None


def test_concurrent_creators_in_several_handles_make_one_row(open_store: OpenStore) -> None:
    """Eight handles racing on one digest from eight threads: one row, one creator."""
    stores = [open_store() for _ in range(8)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def race(store: Store, n: int) -> None:
        barrier.wait()
        _, created = store.create(
            "same", ids(f"pmem-{n}"), new_row("same", n=n), announce=Announcements()
        )
        results.append(created)

    threads = [threading.Thread(target=race, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert stores[0].total(client=None, provider=None, exclude=()) == 1


def test_creation_stamps_strictly_increase(open_store: OpenStore) -> None:
    """Rows built with equal or older stamps still get later ones, so pages never skip them."""
    store = open_store()
    rows = [
        store.create(f"d{n}", ids(f"pmem-{n}"), new_row(f"d{n}", n=0), announce=Announcements())[0]
        for n in range(5)
    ]
    stamps = [r.created_at for r in rows]
    assert stamps == sorted(set(stamps)) and len(set(stamps)) == 5
    assert all(r.updated_at == r.created_at for r in rows)
    assert [store.get(r.instance_id) for r in rows] == rows


def test_a_taken_candidate_id_is_skipped(open_store: OpenStore) -> None:
    """When the first candidate id is taken, the next free one is used."""
    store = open_store()
    store.create("d1", ids("pmem-a"), new_row("d1"), announce=Announcements())
    row, created = store.create(
        "d2", ids("pmem-a", "pmem-b"), new_row("d2"), announce=Announcements()
    )
    assert created and row.instance_id == "pmem-b"


def test_the_total_cap_is_counted_in_the_creating_transaction(open_store: OpenStore) -> None:
    """At the cap a new digest is refused (429), an existing one is still found."""
    store = open_store()
    for n in range(3):
        create(store, n)
    with pytest.raises(InstanceCapReached) as caught:
        store.create("new", ids("pmem-new"), new_row("new"), announce=Announcements(), max_total=3)
    assert caught.value.status == 429
    assert store.get("pmem-new") is None
    found, created = store.create(
        "digest-1", ids("pmem-x"), new_row("digest-1"), announce=Announcements(), max_total=3
    )
    assert not created and found.instance_id == f"pmem-{1:016x}"


def test_changes_are_announced_before_they_commit(open_store: OpenStore) -> None:
    """While the announcer runs, another handle still sees the state before the change."""
    store, other = open_store(), open_store()
    seen: list[object] = []
    announce = Announcements(lambda: seen.append(other.by_digest("d")))
    row, _ = store.create("d", ids("pmem-a"), new_row("d"), announce=announce)
    assert announce.changes == [(["pmem-a"], ["d"])] and seen == [None]

    seen.clear()
    announce = Announcements(lambda: seen.append(other.get("pmem-a")))
    replaced = store.replace(
        row,
        lambda key_id: Row(
            **{**row.__dict__, "model": "m2", "config_digest": "d2", "updated_at": stamp(9)}
        ),
        announce=announce,
    )
    assert announce.changes == [(["pmem-a"], ["d", "d2"])] and seen == [row]
    assert replaced.model == "m2"

    seen.clear()
    announce = Announcements(lambda: seen.append(other.get("pmem-a")))
    assert store.delete("pmem-a", announce=announce) == replaced
    assert announce.changes == [(["pmem-a"], ["d2"])] and seen == [replaced]
    assert other.get("pmem-a") is None


def test_a_change_whose_announcement_fails_is_not_committed(open_store: OpenStore) -> None:
    """If the announcement cannot be made, the write is rolled back: nothing unannounced lands."""
    store = open_store()

    def fail() -> None:
        raise StorageError("cannot announce")

    with pytest.raises(StorageError):
        store.create("d", ids("pmem-a"), new_row("d"), announce=Announcements(fail))
    assert store.get("pmem-a") is None and store.by_digest("d") is None
    row = create(store, 1)
    with pytest.raises(StorageError):
        store.delete(row.instance_id, announce=Announcements(fail))
    assert store.get(row.instance_id) == row


def test_replace_refuses_a_stale_version_and_a_taken_configuration(open_store: OpenStore) -> None:
    """A replace from an outdated row, or onto another row's digest, is a 409; nothing changes."""
    store = open_store()
    a, b = create(store, 1), create(store, 2)
    newer = store.replace(
        a,
        lambda k: Row(**{**a.__dict__, "model": "x", "updated_at": stamp(30)}),
        announce=Announcements(),
    )
    with pytest.raises(ConfigConflict, match="changed while"):
        store.replace(
            a,
            lambda k: Row(**{**a.__dict__, "model": "y", "updated_at": stamp(31)}),
            announce=Announcements(),
        )
    with pytest.raises(ConfigConflict, match=b.instance_id):
        store.replace(
            newer,
            lambda k: Row(
                **{**newer.__dict__, "config_digest": b.config_digest, "updated_at": stamp(32)}
            ),
            announce=Announcements(),
        )
    assert store.get(a.instance_id) == newer and store.get(b.instance_id) == b


def test_delete_takes_usage_with_it(open_store: OpenStore) -> None:
    """A deleted instance's counters are gone; deleting twice finds nothing the second time."""
    store = open_store()
    row = create(store, 1)
    store.add_usage({row.instance_id: UsageDelta(requests=3)})
    assert store.delete(row.instance_id, announce=Announcements()) == row
    assert store.delete(row.instance_id, announce=Announcements()) is None
    usage = store.usage([row.instance_id], since_hour=0)[row.instance_id]
    assert usage["requests"] == 0


def test_pages_follow_creation_order_with_filters_and_exclusions(open_store: OpenStore) -> None:
    """Keyset pages of any size walk every row once, in (created_at, id) order."""
    store = open_store()
    rows = [
        create(
            store,
            n,
            client="cursor" if n % 2 else "codex",
            provider="openai" if n % 3 else "deepseek",
        )
        for n in range(10)
    ]
    for size in (1, 3, 10, 11):
        seen, after = [], None
        while True:
            page = store.page(limit=size, after=after, client=None, provider=None, exclude=())
            seen += page
            if len(page) < size:
                break
            after = (page[-1].created_at, page[-1].instance_id)
        assert seen == rows
    cursor_rows = store.page(limit=100, after=None, client="cursor", provider=None, exclude=())
    assert cursor_rows == [r for r in rows if r.client == "cursor"]
    both = store.page(limit=100, after=None, client="cursor", provider="deepseek", exclude=())
    assert both == [r for r in rows if r.client == "cursor" and r.provider == "deepseek"]
    hidden = [rows[0].instance_id, rows[5].instance_id]
    kept = store.page(limit=100, after=None, client=None, provider=None, exclude=hidden)
    assert kept == [r for r in rows if r.instance_id not in hidden]
    assert store.total(client=None, provider=None, exclude=hidden) == 8
    assert store.total(client="codex", provider=None, exclude=()) == 5
    assert store.total(client="nobody", provider="openai", exclude=()) == 0


def test_ciphertext_swaps_are_compare_and_set(open_store: OpenStore) -> None:
    """A swap lands only where the row still holds the ciphertext that was read."""
    store = open_store()
    a, b = create(store, 1), create(store, 2)
    announce = Announcements()
    done = store.swap_ciphertexts(
        [(a.instance_id, a.api_key, "v2.k1.new-a"), (b.instance_id, "v2.k0.not-this", "x")],
        announce=announce,
    )
    assert [r.instance_id for r in done] == [a.instance_id]
    assert store.get(a.instance_id).api_key == "v2.k1.new-a"  # type: ignore[union-attr]
    assert store.get(b.instance_id) == b
    assert announce.changes == [([a.instance_id, b.instance_id], [])]
    assert store.key_prefixes() == {"v2.k1.": 1, "v2.k0.": 1}
    assert {c.instance_id: c.api_key for c in store.ciphertexts()} == {
        a.instance_id: "v2.k1.new-a",
        b.instance_id: b.api_key,
    }


def test_dropping_every_stored_key_is_announced_as_everything(open_store: OpenStore) -> None:
    """`secret reset`'s store half: every ciphertext emptied, one announcement for all."""
    store = open_store()
    for n in range(3):
        create(store, n)
    announce = Announcements()
    assert store.drop_ciphertexts(announce=announce) == 3
    assert announce.everything == 1
    assert {c.api_key for c in store.ciphertexts()} == {""}
    assert store.key_prefixes() == {}


def test_secret_hash_and_source_are_stored_and_announced(open_store: OpenStore) -> None:
    """Setting a secret hash or a source changes that row only, announced first."""
    store = open_store()
    row = create(store, 1, source="implicit")
    announce = Announcements()
    updated = store.set_secret_hash(row.instance_id, "h" * 64, announce=announce)
    assert updated is not None and updated.secret_hash == "h" * 64
    promoted = store.set_source(row.instance_id, "api", announce=announce)
    assert promoted is not None and promoted.source == "api"
    assert announce.changes == [([row.instance_id], [row.config_digest])] * 2
    assert store.set_secret_hash("pmem-none", "", announce=announce) is None


def test_usage_from_several_handles_adds_up(open_store: OpenStore) -> None:
    """Counters flushed by several processes add up; the latest LLM error wins."""
    stores = [open_store() for _ in range(3)]
    row = create(stores[0], 1)
    for n, store in enumerate(stores):
        store.add_usage(
            {
                row.instance_id: UsageDelta(
                    requests=2,
                    relay_calls=1,
                    llm_errors=1,
                    prompt_tokens=10,
                    last_used_at=stamp(n),
                    last_llm_error=(400 + n, f"reason {n}", stamp(n)),
                )
            }
        )
    usage = stores[1].usage([row.instance_id], since_hour=0)[row.instance_id]
    assert (usage["requests"], usage["relay_calls"], usage["llm_errors"]) == (6, 3, 3)
    assert usage["prompt_tokens"] == 30 and usage["last_used_at"] == stamp(2)
    assert usage["last_llm_error"] == {"status": 402, "reason": "reason 2", "at": stamp(2)}
    # A late flush of an older failure does not overwrite the newer one.
    stores[0].add_usage({row.instance_id: UsageDelta(last_llm_error=(500, "old", stamp(0)))})
    usage = stores[0].usage([row.instance_id], since_hour=0)[row.instance_id]
    assert usage["last_llm_error"]["status"] == 402


def test_hourly_buckets_keep_only_the_last_day(open_store: OpenStore) -> None:
    """Buckets older than the window are deleted by the next flush: at most 24 per instance."""
    store = open_store()
    row = create(store, 1)
    now = int(time.time()) // 3600
    hours = {now - h: [h + 1, h % 2] for h in range(40)}
    store.add_usage({row.instance_id: UsageDelta(hours=hours)})
    kept = store.usage([row.instance_id], since_hour=0)[row.instance_id]["hours"]
    assert len(kept) == HOURS_KEPT
    assert min(kept) == now - HOURS_KEPT + 1 and kept[now] == (1, 0)
    store.add_usage({row.instance_id: UsageDelta(hours={now: [2, 1]})})
    assert store.usage([row.instance_id], since_hour=now)[row.instance_id]["hours"] == {now: (3, 1)}


def test_expiry_takes_only_idle_rows_of_the_source_asked(open_store: OpenStore) -> None:
    """Idle implicit rows go (by last use, else creation); used, recent and api rows stay."""
    store = open_store()
    idle = [create(store, n, source="implicit") for n in range(3)]
    used = create(store, 10, source="implicit")
    store.add_usage({used.instance_id: UsageDelta(last_used_at="2026-06-01T00:00:00.000Z")})
    api = create(store, 11, source="api")
    announce = Announcements()
    gone = store.expire(
        source="implicit", unused_before="2026-02-01T00:00:00.000Z", limit=2, announce=announce
    )
    assert len(gone) == 2 and announce.changes
    gone += store.expire(
        source="implicit", unused_before="2026-02-01T00:00:00.000Z", limit=2, announce=announce
    )
    assert sorted(r.instance_id for r in gone) == sorted(r.instance_id for r in idle)
    assert store.get(used.instance_id) == used and store.get(api.instance_id) == api


def test_shared_facts_are_the_same_for_every_handle(open_store: OpenStore) -> None:
    """The id key is made once; the writing master key id is what the last setter said."""
    a, b = open_store(), open_store()
    assert a.id_key() == b.id_key() and len(a.id_key()) == 32
    assert a.master_key_id() is None
    b.set_master_key_id("k1")
    assert a.master_key_id() == "k1"


# -- SQLite only ----------------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE instances (instance_id TEXT PRIMARY KEY, client TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL, model TEXT NOT NULL, api_key TEXT NOT NULL, masked_key TEXT NOT NULL,
    base_url TEXT NOT NULL DEFAULT '', config_digest TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE usage (instance_id TEXT PRIMARY KEY, requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0, relay_calls INTEGER NOT NULL DEFAULT 0,
    relay_errors INTEGER NOT NULL DEFAULT 0, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, last_used_at TEXT);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO instances VALUES ('pmem-old', 'cursor', 'openai', 'm', 'v1.k.x', 'sk-…', '',
    'digest-old', '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:00.000Z');
INSERT INTO usage(instance_id, requests) VALUES ('pmem-old', 7);
"""


def test_a_database_from_the_previous_release_is_migrated_once(tmp_path: Path) -> None:
    """A registry file made before schema versions gains the new columns, keeping its rows."""
    data_dir = ensure_private_dir(tmp_path / "data")
    db = sqlite3.connect(data_dir / DB_FILE)
    db.executescript(OLD_SCHEMA)
    db.close()
    stores = [SqliteStore(data_dir) for _ in range(2)]  # the second open finds it done
    try:
        row = stores[1].get("pmem-old")
        assert row is not None and (row.source, row.secret_hash, row.client) == (
            "api",
            "",
            "cursor",
        )
        usage = stores[0].usage(["pmem-old"], since_hour=0)["pmem-old"]
        assert usage["requests"] == 7 and usage["llm_errors"] == 0
    finally:
        for store in stores:
            store.close()
    db = sqlite3.connect(data_dir / DB_FILE)
    assert db.execute("PRAGMA user_version").fetchone() == (2,)
    db.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """A schema newer than this gateway knows is a clear 503, not a guess."""
    data_dir = ensure_private_dir(tmp_path / "data")
    SqliteStore(data_dir).close()
    db = sqlite3.connect(data_dir / DB_FILE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer gateway"):
        SqliteStore(data_dir)


# -- PostgreSQL only ------------------------------------------------------------------------


def test_replicas_opening_a_fresh_database_at_once_migrate_it_once(database_url: str) -> None:
    """Six replicas opening an empty database together: one schema, each step recorded once."""
    import psycopg

    from gateway.instances.pg_db import SCHEMA_VERSION

    stores: list[PgStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(PgStore(database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == [] and len(stores) == 6
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT version FROM powermem_gateway.schema_migrations ORDER BY version"
            ).fetchall()
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert stores[0].id_key() == stores[5].id_key()
    finally:
        for store in stores:
            store.close()


def test_a_postgresql_schema_from_a_newer_release_is_refused(database_url: str) -> None:
    """A schema version this gateway does not know is a clear 503, not a guess."""
    import psycopg

    PgStore(database_url).close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO powermem_gateway.schema_migrations(version) VALUES (99)")
    with pytest.raises(StorageError, match="newer gateway"):
        PgStore(database_url)


def test_the_first_master_key_claimed_is_the_one_every_replica_is_held_to(
    database_url: str,
) -> None:
    """Claiming records a key only once; later claims return the recorded one."""
    a, b = PgStore(database_url), PgStore(database_url)
    try:
        assert a.claim_master_key_id("k1") == "k1"
        assert b.claim_master_key_id("k2") == "k1"
        b.set_master_key_id("k3")  # a rotation moves it on
        assert a.claim_master_key_id("k1") == "k3"
    finally:
        a.close()
        b.close()


def test_audit_entries_of_every_replica_land_in_one_trail(database_url: str) -> None:
    """Entries added by two replicas are all in the database's audit table."""
    import psycopg

    a, b = PgStore(database_url), PgStore(database_url)
    try:
        a.add_audit([{"ts": stamp(1), "action": "create", "instance_id": "pmem-a"}])
        b.add_audit([{"ts": stamp(2), "action": "delete", "instance_id": "pmem-a"}])
    finally:
        a.close()
        b.close()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT action, entry->>'instance_id' FROM powermem_gateway.audit ORDER BY ts"
        ).fetchall()
    assert rows == [("create", "pmem-a"), ("delete", "pmem-a")]
