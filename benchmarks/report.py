"""The results: printed tables, results.json and results.md (the README's table)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Row, Spread, Table

__all__ = ["markdown", "rows_table", "text", "write"]

_HEAD = (
    "family",
    "case",
    "conns",
    "via",
    "rps",
    "rps ÷ direct",
    "p50 ms",
    "added p50 ms",
    "p99 ms",
    "CPU µs/req",
    "direct rps",
    "direct p50 ms",
)


def _mid(spread: Spread | None, fmt: str) -> str:
    return fmt.format(spread.mid) if spread is not None else "–"


def _full(spread: Spread | None, fmt: str, *, signed: bool = False) -> str:
    return spread.text(fmt, signed=signed) if spread is not None else "–"


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.family,
        row.case,
        str(row.connections),
        row.via,
        _mid(row.rps, "{:,.0f}"),
        _full(row.rps_ratio, "{:.2f}"),
        _mid(row.p50, "{:.3f}"),
        _full(row.added_p50, "{:.3f}", signed=True),
        _mid(row.p99, "{:.2f}"),
        _full(row.cpu_us, "{:.0f}"),
        _mid(row.spread(lambda s: s.direct.rps), "{:,.0f}"),
        _mid(row.spread(lambda s: s.direct.p50_ms), "{:.3f}"),
    )


def rows_table(ctx: Context) -> Table:
    table = Table(
        "Every figure against the direct call of the same repetition: median (min–max)", _HEAD
    )
    table.rows = [_cells(r) for r in ctx.rows]
    return table


def _all(ctx: Context) -> list[Table]:
    tables = [rows_table(ctx)] if ctx.rows else []
    if ctx.targets.rows:
        tables.append(ctx.targets)
    return tables + ctx.tables


def _text_table(table: Table) -> str:
    lines = [table.head, *table.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(table.head))]
    out = [table.title, ""]
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out += [f"  {note}" for note in table.notes]
    return "\n".join(out)


def text(ctx: Context) -> str:
    return "\n\n".join(_text_table(t) for t in _all(ctx))


def _md_table(table: Table) -> str:
    out = [f"#### {table.title}", ""]
    out.append("| " + " | ".join(table.head) + " |")
    out.append("|" + "---|" * len(table.head))
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table.rows]
    if table.notes:
        out.append("")
        out += [f"- {note}" for note in table.notes]
    return "\n".join(out)


def markdown(ctx: Context) -> str:
    return "\n\n".join(_md_table(t) for t in _all(ctx)) + "\n"


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in load],
    }


def write(ctx: Context, out_dir: Path, settings: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": _machine(),
        "settings": settings,
        "rows": [r.as_dict() for r in ctx.rows],
        "targets": [dict(zip(ctx.targets.head, row, strict=True)) for row in ctx.targets.rows],
        "tables": [
            {"title": t.title, "rows": [dict(zip(t.head, r, strict=True)) for r in t.rows]}
            for t in ctx.tables
        ],
        **ctx.extra,
    }
    (out_dir / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown(ctx))
