"""The page's building blocks: escaping, the 24-hour chart."""

from __future__ import annotations

import re

from gateway.ui.chart import HEIGHT, usage_chart
from gateway.ui.html import Html, fill, prose


def _hours(*counts: tuple[int, int]) -> list[dict[str, object]]:
    return [
        {"hour": f"2030-01-01T{n:02d}:00:00Z", "llm_calls": calls, "llm_errors": errors}
        for n, (calls, errors) in enumerate(counts)
    ]


def test_values_are_escaped_and_built_pieces_are_not() -> None:
    """`fill` escapes text (quotes too, for attributes) but keeps what it built itself."""
    inner = fill("<b>{x}</b>", x='"><script>')
    assert inner == "<b>&quot;&gt;&lt;script&gt;</b>"
    assert fill("<i>{x}</i>", x=inner) == "<i><b>&quot;&gt;&lt;script&gt;</b></i>"
    assert isinstance(inner, Html)


def test_backticks_become_code_after_escaping() -> None:
    """`prose` marks up `x` as code, never a tag inside it; an odd backtick stays text."""
    assert prose("run `a <b>`") == "run <code>a &lt;b&gt;</code>"
    assert prose("it's `odd") == "it&#x27;s `odd"


def test_the_chart_draws_calls_and_the_failed_part_to_scale() -> None:
    """One bar per hour with calls; failures in front, as tall as their share of the peak."""
    svg = usage_chart(_hours((0, 0), (4, 1), (2, 0), *[(0, 0)] * 21))
    heights = {
        css: [float(h) for h in re.findall(rf'class="{css}"[^>]*height="([0-9.]+)"', svg)]
        for css in ("calls", "errors")
    }
    assert heights == {"calls": [HEIGHT, HEIGHT / 2], "errors": [HEIGHT / 4]}
    assert 'aria-label="last 24 h: 6 LLM call(s), 1 failed"' in svg
    assert "style=" not in svg


def test_a_quiet_day_draws_only_the_axis() -> None:
    """No call in 24 hours: no bar at all, just the base line."""
    svg = usage_chart(_hours(*[(0, 0)] * 24))
    assert "<rect" not in svg and 'class="axis"' in svg
