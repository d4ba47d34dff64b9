"""Running wrk with bench.lua and reading its one machine-readable result line."""

from __future__ import annotations

import json
import secrets
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import RssSampler, tool

__all__ = ["Load", "WrkResult", "run_wrk"]

SCRIPT = Path(__file__).with_name("bench.lua")
MARKER = "BENCH_RESULT "


@dataclass(frozen=True)
class Load:
    """One request shape, as bench.lua reads it."""

    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body_file: Path | None = None
    mode: str = "static"
    ids_file: Path | None = None
    key_format: str = ""
    count: int = 1

    def env(self) -> dict[str, str]:
        return {
            "BENCH_METHOD": self.method,
            "BENCH_PATH": self.path,
            "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in self.headers.items()),
            "BENCH_BODY_FILE": str(self.body_file or ""),
            "BENCH_MODE": self.mode,
            "BENCH_IDS_FILE": str(self.ids_file or ""),
            "BENCH_KEY_FORMAT": self.key_format,
            "BENCH_COUNT": str(self.count),
            # A fresh prefix per wrk run, so "unique" keys never repeat across runs.
            "BENCH_PREFIX": secrets.token_hex(4),
        }


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    errors: int
    peak_rss_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wrk(base_url: str, load: Load, connections: int, seconds: float) -> WrkResult:
    argv = [
        tool("wrk"),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        base_url,
    ]
    env = {"PATH": "/usr/bin:/bin", **load.env()}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            duration = raw["duration_us"] / 1e6
            return WrkResult(
                rps=round(raw["requests"] / duration, 1) if duration else 0.0,
                p50_ms=raw["p50_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                mean_ms=round(raw["mean_us"] / 1000, 3),
                requests=raw["requests"],
                errors=raw["socket_errors"] + raw["status_errors"],
            )
    raise RuntimeError(f"wrk gave no result line:\n{out.stdout}\n{out.stderr}")


def run_wrk(
    base_url: str,
    load: Load,
    *,
    connections: int,
    seconds: float,
    warmup: float,
    rss_pid: int | None = None,
) -> WrkResult:
    """A discarded warm-up run, then the measured one (sampling `rss_pid`'s memory)."""
    if warmup > 0:
        _wrk(base_url, load, connections, warmup)
    if rss_pid is None:
        return _wrk(base_url, load, connections, seconds)
    with RssSampler(rss_pid).running() as sampler:
        result = _wrk(base_url, load, connections, seconds)
    result.peak_rss_mb = round(sampler.peak, 1)
    return result
