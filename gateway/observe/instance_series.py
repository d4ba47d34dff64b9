"""The relay's per-instance counters: plain numbers, written as Prometheus text directly.

prometheus_client keeps three tracked objects per child (the child, its value, its lock):
15 000 objects at `MAX_INSTANCES` label sets of five counters, walked by every full garbage
collection, and its generic exposition took ~31 ms a scrape at that size, in a thread that
held the interpreter lock against the event loop (issue 12: the p99 under a flood of
scrapes). Here each label set is one list, its label text escaped once when it first
appears, and writing all of them takes ~3 ms at the cap. Each line is what
prometheus_client wrote for the same counters (tests/test_observe_bounded.py compares them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CALLS", "COMPLETION", "ERRORS", "LLM_ERRORS", "PROMPT", "InstanceSeries"]

# A row: [label text, calls, errors, prompt tokens, completion tokens, LLM errors].
CALLS, ERRORS, PROMPT, COMPLETION, LLM_ERRORS = range(1, 6)
# (name, help, column, kind label): in the order prometheus_client wrote them.
_FAMILIES = (
    ("powermem_gateway_relay_calls_total", "Relayed LLM calls per instance.", ((CALLS, ""),)),
    (
        "powermem_gateway_relay_errors_total",
        "Failed relayed LLM calls per instance.",
        ((ERRORS, ""),),
    ),
    (
        "powermem_gateway_relay_tokens_total",
        "Tokens used by relayed LLM calls per instance (kind: prompt or completion).",
        ((PROMPT, ',kind="prompt"'), (COMPLETION, ',kind="completion"')),
    ),
    (
        "powermem_gateway_llm_errors_total",
        "LLM calls that failed at the provider, per instance.",
        ((LLM_ERRORS, ""),),
    ),
)


def _escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class InstanceSeries:
    """Counters per (instance id, client label); bounded by the caller (`Metrics`)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], list[Any]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: tuple[str, str]) -> list[Any] | None:
        return self._rows.get(key)

    def add(self, key: tuple[str, str]) -> list[Any]:
        instance_id, client = key
        labels = f'client="{_escape(client)}",instance_id="{_escape(instance_id)}"'
        row = self._rows[key] = [labels, 0, 0, 0, 0, 0]
        return row

    def text(self) -> str:
        """The four families in the text exposition format. Safe from another thread: the
        rows are copied first, and a count read mid-update is only one call behind."""
        rows = list(self._rows.values())
        out: list[str] = []
        for name, help_text, columns in _FAMILIES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} counter\n")
            for row in rows:
                for column, kind in columns:
                    out.append(f"{name}{{{row[0]}{kind}}} {float(row[column])!r}\n")
        return "".join(out)
