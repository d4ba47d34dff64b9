"""What every benchmark family shares: durations, the work dir, the upstream, direct baselines."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.wrk import Load, WrkResult, run_wrk

__all__ = ["SMALL_GET", "Context", "Row", "post_json"]

# What a coding tool's memory search looks like on the wire, minus powermem's own work.
SMALL_GET = Load(path="/api/v1/memories?user_id=bench-user&limit=10")


@dataclass
class Row:
    """One figure: a request shape at a concurrency, direct vs through something."""

    family: str
    case: str
    connections: int
    via: str
    direct: WrkResult
    measured: WrkResult

    @property
    def rps_ratio(self) -> float:
        return self.measured.rps / self.direct.rps if self.direct.rps else 0.0

    @property
    def p50_ratio(self) -> float:
        return self.measured.p50_ms / self.direct.p50_ms if self.direct.p50_ms else 0.0

    @property
    def added_p50_ms(self) -> float:
        return self.measured.p50_ms - self.direct.p50_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "case": self.case,
            "connections": self.connections,
            "via": self.via,
            "direct": self.direct.as_dict(),
            "measured": self.measured.as_dict(),
            "rps_ratio": round(self.rps_ratio, 3),
            "p50_ratio": round(self.p50_ratio, 3),
            "added_p50_ms": round(self.added_p50_ms, 3),
        }


@dataclass
class Context:
    work: Path
    seconds: float
    warmup: float
    upstream_url: str
    rows: list[Row] = field(default_factory=list)
    memory_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    _direct: dict[tuple[str, int], WrkResult] = field(default_factory=dict)

    def wrk(
        self, url: str, load: Load, connections: int, *, rss_pid: int | None = None
    ) -> WrkResult:
        result = run_wrk(
            url,
            load,
            connections=connections,
            seconds=self.seconds,
            warmup=self.warmup,
            rss_pid=rss_pid,
        )
        if result.errors:
            print(f"  ! {result.errors} errors on {url} {load.method} {load.path} c={connections}")
        return result

    def direct(self, name: str, load: Load, connections: int) -> WrkResult:
        """The upstream called directly (measured once per shape and concurrency, then reused)."""
        key = (name, connections)
        if key not in self._direct:
            self._direct[key] = self.wrk(self.upstream_url, load, connections)
        return self._direct[key]

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(
            f"  {row.case:<44} c={row.connections:<3} {row.via:<22} "
            f"{row.measured.rps:>9.0f} rps ({row.rps_ratio:4.2f}x)  "
            f"p50 {row.measured.p50_ms:7.3f} ms (+{row.added_p50_ms:.3f})",
            flush=True,
        )


def post_json(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)
