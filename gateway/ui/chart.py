"""The 24-hour chart of an instance: LLM calls per hour, failed ones on top, as inline SVG.

Drawn on the server, so the page needs no script to show it; colours come from the
stylesheet (classes, no `style` attributes, which the Content-Security-Policy would refuse).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.ui.html import Html, fill, join

__all__ = ["BAR", "HEIGHT", "usage_chart"]

BAR = 5  # width of one hour, in px
HEIGHT = 24


def _bar(x: int, height: float, css: str, label: str) -> Html:
    h = max(1.0, round(height, 1))
    return fill(
        '<rect class="{css}" x="{x}" y="{y}" width="{w}" height="{h}">'
        "<title>{label}</title></rect>",
        css=css,
        x=x,
        y=round(HEIGHT - h, 1),
        w=BAR - 1,
        h=h,
        label=label,
    )


def usage_chart(hours: Sequence[dict[str, Any]]) -> Html:
    """One bar per hour, oldest on the left: all LLM calls, the failed ones (a part of them)
    in front from the bottom; an hour with no call draws nothing."""
    calls = sum(int(h["llm_calls"]) for h in hours)
    errors = sum(int(h["llm_errors"]) for h in hours)
    # A failure is also a call; max() keeps the bar whole should the counts ever disagree.
    peak = max([max(int(h["llm_calls"]), int(h["llm_errors"])) for h in hours] + [1])
    bars: list[Html] = []
    for n, hour in enumerate(hours):
        total, failed = int(hour["llm_calls"]), int(hour["llm_errors"])
        when = str(hour["hour"])[11:16] + " UTC"
        label = f"{when}: {max(total, failed)} LLM call(s), {failed} failed"
        if total:
            bars.append(_bar(n * BAR, max(total, failed) / peak * HEIGHT, "calls", label))
        if failed:
            bars.append(_bar(n * BAR, failed / peak * HEIGHT, "errors", label))
    summary = f"last 24 h: {calls} LLM call(s), {errors} failed"
    return fill(
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{summary}"><title>{summary}</title>'
        '<line class="axis" x1="0" y1="{h}" x2="{w}" y2="{h}"></line>{bars}</svg>',
        w=BAR * len(hours),
        h=HEIGHT,
        summary=summary,
        bars=join(bars),
    )
