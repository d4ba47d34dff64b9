"""Usage counters in PostgreSQL: totals per instance, the last LLM error, hourly buckets.

Counters only ever add, in SQL (`INSERT … ON CONFLICT DO UPDATE SET x = usage.x +
excluded.x`), never read-modify-write, so the flushes of any number of replicas add up
exactly. Rows are touched in id order, so two replicas flushing at once never deadlock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from gateway.instances.pg_db import PgDatabase
from gateway.instances.store import COUNTERS, HOURS_KEPT, UsageDelta, empty_usage

__all__ = ["add", "read"]

_ADD = (
    f"INSERT INTO usage(instance_id, {', '.join(COUNTERS)}, last_used_at) "
    f"VALUES (%s, {', '.join(['%s'] * len(COUNTERS))}, %s) "
    "ON CONFLICT (instance_id) DO UPDATE SET "
    + ", ".join(f"{c} = usage.{c} + excluded.{c}" for c in COUNTERS)
    + ", last_used_at = nullif(greatest(coalesce(usage.last_used_at, ''), "
    "coalesce(excluded.last_used_at, '')), '')"
)


def add(cur: psycopg.Cursor[Any], deltas: Mapping[str, UsageDelta]) -> None:
    """Add each delta inside the caller's transaction."""
    ordered = sorted(deltas.items())
    cur.executemany(
        _ADD,
        [(i, *(getattr(d, c) for c in COUNTERS), d.last_used_at) for i, d in ordered],
    )
    errors = [(i, d.last_llm_error) for i, d in ordered if d.last_llm_error is not None]
    for instance_id, (status, reason, at) in errors:
        text = json.dumps({"status": status, "reason": reason, "at": at})
        # The later failure wins, whichever replica reports it last.
        cur.execute(
            "UPDATE usage SET last_llm_error = %s::jsonb WHERE instance_id = %s AND "
            "coalesce(last_llm_error->>'at', '') <= %s",
            (text, instance_id, at),
        )
    hours = [
        (i, hour, calls, errs)
        for i, d in ordered
        for hour, (calls, errs) in sorted(d.hours.items())
    ]
    if hours:
        cur.executemany(
            "INSERT INTO usage_hourly(instance_id, hour, llm_calls, llm_errors) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (instance_id, hour) DO UPDATE SET "
            "llm_calls = usage_hourly.llm_calls + excluded.llm_calls, "
            "llm_errors = usage_hourly.llm_errors + excluded.llm_errors",
            hours,
        )
    oldest = int(time.time()) // 3600 - HOURS_KEPT + 1
    cur.execute("DELETE FROM usage_hourly WHERE hour < %s", (oldest,))


def read(
    database: PgDatabase, instance_ids: Sequence[str], *, since_hour: int
) -> dict[str, dict[str, Any]]:
    """Counters, `last_llm_error` and `hours` ({hour: (calls, errors)}) for each id."""
    result = {i: empty_usage() | {"hours": {}} for i in instance_ids}
    if not instance_ids:
        return result
    ids = list(instance_ids)
    for instance_id, *values in database.all(
        f"SELECT instance_id, {', '.join(COUNTERS)}, last_used_at, last_llm_error "
        "FROM usage WHERE instance_id = ANY(%s)",
        (ids,),
    ):
        usage = result[instance_id]
        usage.update(zip(COUNTERS, (int(v) for v in values[: len(COUNTERS)]), strict=True))
        last_used, last_error = values[len(COUNTERS) :]
        usage["last_used_at"] = last_used or None
        usage["last_llm_error"] = last_error or None
    for instance_id, hour, calls, errors in database.all(
        "SELECT instance_id, hour, llm_calls, llm_errors FROM usage_hourly "
        "WHERE instance_id = ANY(%s) AND hour >= %s",
        (ids, since_hour),
    ):
        result[instance_id]["hours"][int(hour)] = (int(calls), int(errors))
    return result
