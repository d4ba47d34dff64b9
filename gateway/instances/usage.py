"""Usage counted in memory on the request path and written to the store about once a second.

Counting must cost next to nothing (it runs for every bound request), so it only adds to a
`UsageDelta`; `take()` hands the deltas to the flush. Bounded: one delta per instance used
since the last flush, and instances are capped (issue 12.1).
"""

from __future__ import annotations

import re
import time
from typing import Any

from gateway.instances.store import HOURS_KEPT, UsageDelta, now_iso
from gateway.observe.logs import redact

__all__ = ["COUNTABLE", "MAX_REASON", "UsageBook", "current_hour", "shape"]

COUNTABLE = frozenset(
    ("requests", "errors", "relay_calls", "relay_errors", "prompt_tokens", "completion_tokens")
)
MAX_REASON = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def current_hour() -> int:
    return int(time.time()) // 3600


def _reason(text: str) -> str:
    """A short, single-line, secret-free reason, fit for a header, a log and the UI."""
    text = redact(_CONTROL.sub(" ", str(text))).strip()
    return text[: MAX_REASON - 1] + "…" if len(text) > MAX_REASON else text


class UsageBook:
    def __init__(self) -> None:
        self._pending: dict[str, UsageDelta] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def count(self, instance_id: str, **delta: int) -> None:
        usage = self._pending.get(instance_id)
        if usage is None:
            usage = self._pending[instance_id] = UsageDelta()
        for name, value in delta.items():
            if name not in COUNTABLE:
                raise TypeError(f"unknown usage counter {name!r}")
            setattr(usage, name, getattr(usage, name) + value)
        usage.last_used_at = now_iso()
        if calls := delta.get("relay_calls", 0):
            usage.hours.setdefault(current_hour(), [0, 0])[0] += calls

    def llm_failed(self, instance_id: str, status: int, reason: str) -> None:
        usage = self._pending.get(instance_id)
        if usage is None:
            usage = self._pending[instance_id] = UsageDelta()
        usage.llm_errors += 1
        usage.last_llm_error = (int(status), _reason(reason), now_iso())
        usage.hours.setdefault(current_hour(), [0, 0])[1] += 1

    def take(self) -> dict[str, UsageDelta]:
        pending, self._pending = self._pending, {}
        return pending

    def give_back(self, pending: dict[str, UsageDelta]) -> None:
        """A flush failed: keep its counts for the next one (merged with what came since)."""
        for instance_id, old in pending.items():
            new = self._pending.setdefault(instance_id, UsageDelta())
            for name in (*COUNTABLE, "llm_errors"):
                setattr(new, name, getattr(new, name) + getattr(old, name))
            new.last_used_at = max(filter(None, (new.last_used_at, old.last_used_at)), default=None)
            if new.last_llm_error is None:
                new.last_llm_error = old.last_llm_error
            for hour, (calls, errors) in old.hours.items():
                bucket = new.hours.setdefault(hour, [0, 0])
                bucket[0] += calls
                bucket[1] += errors

    def drop(self, instance_id: str) -> None:
        self._pending.pop(instance_id, None)


def shape(raw: dict[str, Any], now_hour: int) -> dict[str, Any]:
    """The usage an API client sees: counters, `last_llm_error`, and `last_24h` oldest first."""
    hours: dict[int, tuple[int, int]] = raw.pop("hours", {})
    first = now_hour - HOURS_KEPT + 1
    raw["last_24h"] = [
        {
            "hour": time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour * 3600)),
            "llm_calls": hours.get(hour, (0, 0))[0],
            "llm_errors": hours.get(hour, (0, 0))[1],
        }
        for hour in range(first, now_hour + 1)
    ]
    return raw
