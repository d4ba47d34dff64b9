"""The store of record's interface: what the registry needs from a database, and nothing more.

`SqliteStore` (gateway.instances.sqlite_store) is the embedded default; `PgStore`
(gateway.instances.pg_store, issue 13) implements the same protocol for several replicas, and
both run the same shared test suite (tests/test_store_contract.py). Every method is blocking
and is called from the registry's one worker thread, never from the event loop.

Writes that change what an instance *is* (create, replace, delete, secret, key, source) take
an `Announcer` and call it inside their transaction, before it commits, with the ids and
config digests about to change. That is how other processes learn to drop what they cached
(gateway.instances.changes); the PostgreSQL store also records and NOTIFYs them itself, in the
same transaction (gateway.instances.pg_feed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = [
    "COUNTERS",
    "HOURS_KEPT",
    "Announcer",
    "Changes",
    "Ciphertext",
    "Row",
    "Source",
    "Store",
    "UsageDelta",
    "empty_usage",
    "now_iso",
]

Source = Literal["api", "implicit", "yaml"]
# Hourly buckets of LLM calls and errors kept per instance (the dashboard's 24 h chart).
HOURS_KEPT = 24
# The usage counters every store adds up, in this order.
COUNTERS = (
    "requests",
    "errors",
    "relay_calls",
    "relay_errors",
    "prompt_tokens",
    "completion_tokens",
    "llm_errors",
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Row:
    """One stored instance, field for field as the `instances` table holds it."""

    instance_id: str
    client: str
    provider: str
    model: str
    api_key: str  # ciphertext ('' once `secret reset` dropped it)
    masked_key: str
    base_url: str
    config_digest: str
    created_at: str
    updated_at: str
    source: str = "api"
    secret_hash: str = ""  # '' when the instance has no secret


@dataclass(frozen=True)
class Ciphertext:
    """What a key rotation or a format upgrade needs to re-seal one stored key."""

    instance_id: str
    api_key: str
    provider: str
    base_url: str


@dataclass
class UsageDelta:
    """Counters gathered in memory between two flushes (about a second)."""

    requests: int = 0
    errors: int = 0
    relay_calls: int = 0
    relay_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_errors: int = 0
    last_used_at: str | None = None
    # (status, reason, at) of the latest LLM failure in this delta.
    last_llm_error: tuple[int, str, str] | None = None
    # hour number (Unix time // 3600) → [llm calls, llm errors]; at most a couple of hours.
    hours: dict[int, list[int]] = field(default_factory=dict)


class Announcer(Protocol):
    """Tells every process that these instances are about to change (see module doc)."""

    def changed(self, instance_ids: Sequence[str], digests: Sequence[str]) -> None: ...

    def changed_all(self) -> None: ...


class Changes(Announcer, Protocol):
    """How one process learns what other processes changed, and tells them what it changes.

    `ChangeLog` (gateway.instances.changes) on one machine, `ChangeFeed`
    (gateway.instances.pg_feed) on PostgreSQL. The counter `read()` returns moves with every
    change this process has taken in; None means "do not serve from a cache now".
    """

    # The counter a write's result may be cached at (set by `exclusive()` as it ends).
    written_at: int | None

    def read(self) -> int | None: ...

    def since(self, seen: int, now: int) -> set[str] | None:
        """The keys changed after `seen` up to `now`; None means "assume everything"."""
        ...

    def shared(self) -> AbstractContextManager[int | None]:
        """Around a cache miss's read: yields the counter the read is done at."""
        ...

    def exclusive(self) -> AbstractContextManager[Any]:
        """Around a write: announce inside; once it ends every process knows."""
        ...

    def check(self) -> object:
        """Housekeeping: repair what can be repaired (a replaced file, a stopped feed)."""
        ...

    def close(self) -> None: ...


# build(instance_id, master_key_id) -> Row, run inside the write transaction.
BuildNew = Callable[[str, str | None], Row]
# build(master_key_id) -> Row, run inside the write transaction.
BuildReplacement = Callable[[str | None], Row]


class Store(Protocol):
    """The registry's store of record. Raise `StorageError` (503) when it cannot be used."""

    # Whether other hosts share this store (PostgreSQL): the master key must then come from
    # the environment, and the key the store records is checked at start.
    remote: bool

    def close(self) -> None: ...

    def ping(self) -> None:
        """Raise `StorageError` unless the store answers now (readiness)."""
        ...

    # -- facts shared by every process ---------------------------------------------------

    def id_key(self) -> bytes:
        """The HMAC key ids are derived with: made once, shared, never rotated."""
        ...

    def master_key_id(self) -> str | None:
        """The master key every writer encrypts under (None until a rotation names one)."""
        ...

    def set_master_key_id(self, key_id: str) -> None: ...

    def claim_master_key_id(self, key_id: str) -> str:
        """Record `key_id` as the writing master key unless one is recorded; the recorded one."""
        ...

    # -- instances -------------------------------------------------------------------------

    def get(self, instance_id: str) -> Row | None: ...

    def by_digest(self, digest: str) -> Row | None: ...

    def create(
        self,
        digest: str,
        candidates: Iterator[str],
        build: BuildNew,
        *,
        announce: Announcer,
        max_total: int = 0,
    ) -> tuple[Row, bool]:
        """The row for `digest`, made from the first free candidate id if there is none.

        False when it existed. With `max_total` > 0, raises `InstanceCapReached` instead of
        creating the row that would pass it (counted inside the same transaction). The new
        row's `created_at` is later than every stored one (the store adjusts it if needed),
        so a page cursor never skips a row created while someone pages.
        """
        ...

    def replace(self, old: Row, build: BuildReplacement, *, announce: Announcer) -> Row:
        """Write `build(master_key_id)` over `old` unless `old` changed meanwhile (409)."""
        ...

    def delete(self, instance_id: str, *, announce: Announcer) -> Row | None: ...

    def set_secret_hash(
        self, instance_id: str, secret_hash: str, *, announce: Announcer
    ) -> Row | None: ...

    def set_source(self, instance_id: str, source: str, *, announce: Announcer) -> Row | None: ...

    def expire(
        self, *, source: str, unused_before: str, limit: int, announce: Announcer
    ) -> list[Row]:
        """Delete up to `limit` rows of `source` whose last use (or creation) is older."""
        ...

    # -- listing ------------------------------------------------------------------------------

    def page(
        self,
        *,
        limit: int,
        after: tuple[str, str] | None,
        client: str | None,
        provider: str | None,
        exclude: Sequence[str],
    ) -> list[Row]:
        """Rows ordered by (created_at, instance_id), strictly after `after`."""
        ...

    def total(self, *, client: str | None, provider: str | None, exclude: Sequence[str]) -> int: ...

    # -- stored keys ----------------------------------------------------------------------------

    def ciphertexts(self) -> list[Ciphertext]: ...

    def key_prefixes(self) -> dict[str, int]:
        """How many stored keys start with each `<format>.<key id>.` prefix ('' excluded)."""
        ...

    def swap_ciphertexts(
        self, swaps: Sequence[tuple[str, str, str]], *, announce: Announcer
    ) -> list[Row]:
        """Set each (instance_id, old, new) ciphertext where the row still holds `old`."""
        ...

    def drop_ciphertexts(self, *, announce: Announcer) -> int:
        """Forget every stored key (`secret reset`); returns how many were dropped."""
        ...

    # -- usage ----------------------------------------------------------------------------------

    def add_usage(self, deltas: Mapping[str, UsageDelta]) -> None: ...

    def usage(self, instance_ids: Sequence[str], *, since_hour: int) -> dict[str, dict[str, Any]]:
        """Counters, last LLM error and hourly buckets (hour ≥ since_hour) of each id."""
        ...

    # -- the audit trail ------------------------------------------------------------------------

    def add_audit(self, entries: Sequence[dict[str, object]]) -> None:
        """Keep audit entries where every replica's are (a no-op where audit.log is that)."""
        ...


def empty_usage() -> dict[str, Any]:
    """The usage of an instance nothing has been counted for yet."""
    usage: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    usage["last_used_at"] = None
    usage["last_llm_error"] = None
    return usage
