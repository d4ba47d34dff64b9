"""What every benchmark family shares: the run's settings, the rows it measured, and targets.

A *row* is one request shape at one concurrency through one thing ("via"), measured once per
repetition together with the direct call it is compared to, in the same repetition. Every
ratio and added latency is computed per repetition and then summarised as min / median /
max, so a slow moment of the machine moves both sides of a ratio rather than one.
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import ProcessTree
from benchmarks.wrk import Load, WrkResult, run_wrk

__all__ = [
    "ADMIN_TOKEN",
    "SMALL_GET",
    "Context",
    "Row",
    "Sample",
    "Spread",
    "Table",
    "post_json",
]

# What a coding tool's memory search looks like on the wire, minus powermem's own work.
SMALL_GET = Load(path="/api/v1/memories?user_id=bench-user&limit=10")
# Every benchmark gateway runs with this admin token (for /metrics and uncapped registration).
ADMIN_TOKEN = "pga-benchmark-admin-token-0123456789"


@dataclass(frozen=True)
class Spread:
    """min / median / max of one figure over the repetitions."""

    low: float
    mid: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        got = [v for v in values if v is not None]
        if not got:
            return None
        return cls(min(got), statistics.median(got), max(got))

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        return {
            "min": round(self.low, digits),
            "median": round(self.mid, digits),
            "max": round(self.high, digits),
        }

    def text(self, fmt: str = "{:.2f}", *, signed: bool = False) -> str:
        if signed:  # "+0.10 (-0.02 to +0.31)": a dash between signed numbers would read as one
            f = fmt.replace("{:", "{:+")
            if self.low == self.high:
                return f.format(self.mid)
            return f"{f.format(self.mid)} ({f.format(self.low)} to {f.format(self.high)})"
        if self.low == self.high:
            return fmt.format(self.mid)
        return f"{fmt.format(self.mid)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


@dataclass
class Sample:
    """One repetition: the direct call and the measured one, back to back."""

    direct: WrkResult
    measured: WrkResult
    # Whatever else this repetition is compared to (e.g. nginx as a proxy), by name.
    others: dict[str, WrkResult] = field(default_factory=dict)


@dataclass
class Row:
    family: str
    case: str
    connections: int
    via: str
    samples: list[Sample] = field(default_factory=list)

    def spread(self, figure: Callable[[Sample], float | None]) -> Spread | None:
        return Spread.of(figure(s) for s in self.samples)

    @property
    def rps(self) -> Spread | None:
        return self.spread(lambda s: s.measured.rps)

    @property
    def rps_ratio(self) -> Spread | None:
        return self.spread(lambda s: s.measured.rps / s.direct.rps if s.direct.rps else None)

    @property
    def p50(self) -> Spread | None:
        return self.spread(lambda s: s.measured.p50_ms)

    @property
    def p99(self) -> Spread | None:
        return self.spread(lambda s: s.measured.p99_ms)

    @property
    def added_p50(self) -> Spread | None:
        return self.spread(lambda s: s.measured.p50_ms - s.direct.p50_ms)

    @property
    def cpu_us(self) -> Spread | None:
        return self.spread(lambda s: s.measured.cpu_us)

    def ratio_to(self, other: str) -> Spread | None:
        """Throughput against another server measured in the same repetition."""
        return self.spread(
            lambda s: (
                s.measured.rps / s.others[other].rps
                if other in s.others and s.others[other].rps
                else None
            )
        )

    def as_dict(self) -> dict[str, Any]:
        figures = {
            "rps": self.rps,
            "rps_ratio": self.rps_ratio,
            "p50_ms": self.p50,
            "p99_ms": self.p99,
            "added_p50_ms": self.added_p50,
            "cpu_us_per_request": self.cpu_us,
            "direct_rps": self.spread(lambda s: s.direct.rps),
            "direct_p50_ms": self.spread(lambda s: s.direct.p50_ms),
        }
        return {
            "family": self.family,
            "case": self.case,
            "connections": self.connections,
            "via": self.via,
            **{k: v.as_dict() for k, v in figures.items() if v is not None},
            "errors": sum(s.measured.errors for s in self.samples),
            "samples": [
                {
                    "direct": s.direct.as_dict(),
                    "measured": s.measured.as_dict(),
                    **{k: v.as_dict() for k, v in s.others.items()},
                }
                for s in self.samples
            ],
        }


@dataclass
class Table:
    """A small table of preformatted cells, printed as text and written as markdown."""

    title: str
    head: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append(tuple(str(c) for c in cells))


@dataclass
class Context:
    work: Path
    seconds: float
    warmup: float
    reps: int
    quick: bool
    upstream_url: str
    upstream_pid: int | None = None
    profile: bool = True
    out: Path | None = None
    rows: list[Row] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    targets: Table = field(
        default_factory=lambda: Table(
            "Targets (issue 14 and 12)", ("target", "goal", "measured", "met")
        )
    )
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def upstream_port(self) -> int:
        return int(self.upstream_url.rsplit(":", 1)[1])

    def warm(self, rep: int) -> float:
        """Warm-up seconds before a run: only in the first repetition (later ones find every
        server warm, and the time is better spent measuring)."""
        return self.warmup if rep == 0 else 0.0

    def wrk(
        self,
        url: str,
        load: Load,
        connections: int,
        *,
        rep: int = 0,
        tree: ProcessTree | None = None,
        seconds: float | None = None,
    ) -> WrkResult:
        result = run_wrk(
            url,
            load,
            connections=connections,
            seconds=seconds if seconds is not None else self.seconds,
            warmup=self.warm(rep),
            tree=tree,
        )
        if result.errors:
            print(f"  ! {result.errors} errors on {url} {load.method} {load.path} c={connections}")
        return result

    def find(self, family: str, case: str, connections: int, via: str) -> Row | None:
        key = (family, case, connections, via)
        for row in self.rows:
            if (row.family, row.case, row.connections, row.via) == key:
                return row
        return None

    def row(self, family: str, case: str, connections: int, via: str) -> Row:
        row = self.find(family, case, connections, via)
        if row is None:
            row = Row(family, case, connections, via)
            self.rows.append(row)
        return row

    def add(
        self,
        family: str,
        case: str,
        connections: int,
        via: str,
        direct: WrkResult,
        measured: WrkResult,
        **others: WrkResult,
    ) -> Row:
        row = self.row(family, case, connections, via)
        row.samples.append(Sample(direct, measured, others))
        cpu = f" cpu {measured.cpu_us:5.0f} µs" if measured.cpu_us is not None else ""
        ratio = measured.rps / direct.rps if direct.rps else 0.0
        print(
            f"  {case:<40} c={connections:<3} {via:<20} {measured.rps:>8.0f} rps "
            f"({ratio:4.2f}x)  p50 {measured.p50_ms:7.3f} ms "
            f"({measured.p50_ms - direct.p50_ms:+.3f}){cpu}",
            flush=True,
        )
        return row

    def target(
        self, name: str, goal: str, value: Spread | str | None, ok: bool | None, fmt: str = ""
    ) -> None:
        """One line of the targets table (judged on the median); `ok` None: context only."""
        if isinstance(value, Spread):
            signed = "{:+" in fmt
            measured = value.text(fmt.replace("{:+", "{:"), signed=signed)
        else:
            measured = value if value is not None else "not measured"
        met = "n/a" if ok is None or value is None else ("yes" if ok else "NO")
        self.targets.add(name, goal, measured, met)


def post_json(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None, *, method: str = "POST"
) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.load(response)
