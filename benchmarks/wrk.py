"""Running wrk with bench.lua, reading its one machine-readable result line, and charging the
CPU the server under test spent during the measured seconds to its requests."""

from __future__ import annotations

import json
import resource
import secrets
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procs import ProcessTree, machine_busy_seconds, tool

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
    delay_ms: int = 0

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
            "BENCH_DELAY_MS": str(self.delay_ms),
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
    # CPU the measured process tree spent per request (µs), and in cores over the run.
    cpu_us: float | None = None
    cores: float | None = None
    # CPU wrk itself used, in cores: how much of the machine the load generator took.
    wrk_cores: float | None = None
    # The whole machine's busy cores over the run (everyone else's work included).
    machine_cores: float | None = None

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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    base_url: str,
    load: Load,
    *,
    connections: int,
    seconds: float,
    warmup: float,
    tree: ProcessTree | None = None,
) -> WrkResult:
    """A discarded warm-up run (when `warmup` > 0), then the measured one; with `tree`, the
    CPU that tree spent during the measured run."""
    if warmup > 0:
        _wrk(base_url, load, connections, warmup)
    pids = tree.pids() if tree is not None else set()
    before = tree.cpu_seconds(pids) if tree is not None else 0.0
    wrk_before = _children_cpu()
    machine_before = machine_busy_seconds()
    started = time.monotonic()
    result = _wrk(base_url, load, connections, seconds)
    wall = time.monotonic() - started
    result.wrk_cores = round((_children_cpu() - wrk_before) / wall, 2)
    result.machine_cores = round((machine_busy_seconds() - machine_before) / wall, 2)
    if tree is not None:
        spent = tree.cpu_seconds(pids) - before
        result.cores = round(spent / wall, 2)
        result.cpu_us = round(spent / max(result.requests, 1) * 1e6, 1)
    return result
