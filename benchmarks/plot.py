"""plot.png: the ratios at a glance (needs matplotlib, in the `bench` extra)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from benchmarks.context import Context, Row

__all__ = ["plot"]


def _proxy(ax: Axes, rows: list[Row], metric: str) -> None:
    for case in ("small GET", "4 KB POST"):
        for via, style in (("gateway", "o-"), ("nginx", "s--"), ("gateway on uvloop", "^:")):
            points = [r for r in rows if r.family == "proxy" and r.case == case and r.via == via]
            if not points:
                continue
            x = [r.connections for r in points]
            y = [r.rps_ratio if metric == "rps" else r.added_p50_ms for r in points]
            ax.plot(x, y, style, label=f"{via}, {case}")
    ax.set_xscale("log")
    ax.set_xlabel("connections")
    if metric == "rps":
        ax.set_ylabel("requests/s ÷ direct")
        ax.set_title("proxy throughput vs direct")
    else:
        ax.set_ylabel("added p50 latency (ms)")
        ax.set_title("proxy added latency")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _bars(ax: Axes, rows: list[Row], title: str) -> None:
    labels = [f"{r.case}\nc={r.connections}" for r in rows]
    ax.barh(labels, [r.added_p50_ms for r in rows])
    ax.set_xlabel("added p50 latency vs direct (ms)")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=6)
    ax.grid(alpha=0.3, axis="x")


def plot(ctx: Context, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _proxy(axes[0][0], ctx.rows, "rps")
    _proxy(axes[0][1], ctx.rows, "latency")
    _bars(axes[1][0], [r for r in ctx.rows if r.family == "relay"], "relay")
    _bars(
        axes[1][1],
        [r for r in ctx.rows if r.family in ("registration", "scale")],
        "instance resolution",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
