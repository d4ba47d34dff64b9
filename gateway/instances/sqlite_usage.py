"""Usage counters in SQLite: totals per instance, the last LLM error, and 24 hourly buckets.

Counters only ever add (`x = x + ?`), so any number of gateway processes flush into the same
rows without losing a count. The hourly table keeps at most `HOURS_KEPT` rows per instance:
every flush deletes the buckets that fell out of the window (an indexed range delete).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.instances.sqlite_db import Database
from gateway.instances.store import COUNTERS, HOURS_KEPT, UsageDelta, empty_usage

__all__ = ["COUNTERS", "add", "read"]


def add(db: sqlite3.Connection, deltas: Mapping[str, UsageDelta]) -> None:
    """Add each delta inside the caller's write transaction."""
    sets = ", ".join(f"{c} = {c} + ?" for c in COUNTERS)
    for instance_id, d in deltas.items():
        db.execute(
            "INSERT INTO usage(instance_id) VALUES (?) ON CONFLICT DO NOTHING", (instance_id,)
        )
        db.execute(
            f"UPDATE usage SET {sets}, "
            "last_used_at = max(coalesce(last_used_at, ''), coalesce(?, '')) "
            "WHERE instance_id = ?",
            (*(getattr(d, c) for c in COUNTERS), d.last_used_at, instance_id),
        )
        if d.last_llm_error is not None:
            status, reason, at = d.last_llm_error
            text = json.dumps({"status": status, "reason": reason, "at": at})
            # The later failure wins, whichever process reports it last.
            db.execute(
                "UPDATE usage SET last_llm_error = ? WHERE instance_id = ? AND "
                "coalesce(json_extract(last_llm_error, '$.at'), '') <= ?",
                (text, instance_id, at),
            )
        for hour, (calls, errors) in d.hours.items():
            db.execute(
                "INSERT INTO usage_hourly(instance_id, hour, llm_calls, llm_errors) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(instance_id, hour) DO UPDATE SET "
                "llm_calls = llm_calls + excluded.llm_calls, "
                "llm_errors = llm_errors + excluded.llm_errors",
                (instance_id, hour, calls, errors),
            )
    oldest = int(time.time()) // 3600 - HOURS_KEPT + 1
    db.execute("DELETE FROM usage_hourly WHERE hour < ?", (oldest,))


def read(
    database: Database, instance_ids: Sequence[str], *, since_hour: int
) -> dict[str, dict[str, Any]]:
    """Counters, `last_llm_error` and `hours` ({hour: (calls, errors)}) for each id."""
    result = {i: empty_usage() | {"hours": {}} for i in instance_ids}
    if not instance_ids:
        return result
    ids = json.dumps(list(instance_ids))
    rows = database.all(
        f"SELECT instance_id, {', '.join(COUNTERS)}, last_used_at, last_llm_error "
        "FROM usage WHERE instance_id IN (SELECT value FROM json_each(?))",
        (ids,),
    )
    for instance_id, *values in rows:
        usage = result[instance_id]
        usage.update(zip(COUNTERS, values[: len(COUNTERS)], strict=True))
        last_used, last_error = values[len(COUNTERS) :]
        usage["last_used_at"] = last_used or None
        usage["last_llm_error"] = json.loads(last_error) if last_error else None
    for instance_id, hour, calls, errors in database.all(
        "SELECT instance_id, hour, llm_calls, llm_errors FROM usage_hourly "
        "WHERE instance_id IN (SELECT value FROM json_each(?)) AND hour >= ?",
        (ids, since_hour),
    ):
        result[instance_id]["hours"][int(hour)] = (int(calls), int(errors))
    return result
