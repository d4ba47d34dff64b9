"""The results: one printed table, results.json, results.md and (with matplotlib) plot.png."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Row

__all__ = ["markdown", "table", "write"]

_HEAD = (
    "family",
    "case",
    "conns",
    "via",
    "direct rps",
    "via rps",
    "rps ratio",
    "direct p50",
    "via p50",
    "p50 ratio",
    "via p99",
    "added p50",
)


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.family,
        row.case,
        str(row.connections),
        row.via,
        f"{row.direct.rps:,.0f}",
        f"{row.measured.rps:,.0f}",
        f"{row.rps_ratio:.2f}",
        f"{row.direct.p50_ms:.2f}",
        f"{row.measured.p50_ms:.2f}",
        f"{row.p50_ratio:.2f}",
        f"{row.measured.p99_ms:.2f}",
        f"{row.added_p50_ms:+.2f}",
    )


def table(ctx: Context) -> str:
    """Fixed-width text: every figure against the direct call (latencies in ms)."""
    lines = [_HEAD, *(_cells(r) for r in ctx.rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEAD))]
    left = {0, 1, 3}
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i in left else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    out.append("gateway resident memory (VmRSS, MiB)")
    for name, value in ctx.memory_mb.items():
        out.append(f"  {name:<48} {value:8.1f}")
    return "\n".join(out)


def markdown(ctx: Context) -> str:
    head = [*_HEAD[:7], "direct p50 ms", "via p50 ms", "p50 ratio", "via p99 ms", "added p50 ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in ctx.rows]
    out += ["", "| gateway RSS | MiB |", "|---|---|"]
    out += [f"| {name} | {value:.1f} |" for name, value in ctx.memory_mb.items()]
    return "\n".join(out) + "\n"


def _machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write(ctx: Context, out_dir: Path, settings: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": _machine(),
        "settings": settings,
        "rows": [r.as_dict() for r in ctx.rows],
        "memory_mb": ctx.memory_mb,
        **ctx.extra,
    }
    (out_dir / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(ctx))
    try:
        from benchmarks.plot import plot
    except ImportError:
        print("matplotlib is not installed: no plot.png (pip install 'powermem-gateway[bench]')")
        return
    plot(ctx, out_dir / "plot.png")
