"""`KEY=value` files that a shell sources: powermem's `runtime.env`.

powermem's Claude Code hook launcher reads `runtime.env` by sourcing it with `set -a` (its
PowerShell twin parses `KEY=value` lines), and powermem's own init writes plain, unquoted
`KEY=value` lines. So one line is changed or added, in that form, and every other line stays
as it was. A value is written only when a shell reads it back unchanged without quotes.
"""

from __future__ import annotations

import re

__all__ = ["SHELL_SAFE", "get_value", "remove_key", "set_value"]

# What sh reads back verbatim in an unquoted assignment (no expansion, no splitting).
SHELL_SAFE = re.compile(r"^[A-Za-z0-9_.~:/@%+=,\[\]-]+$")
# A quoted value runs to its closing quote, a bare one to the first blank (after it, a shell
# sees a comment); whatever follows the value on the line is kept as it is.
_LINE = re.compile(
    r"[ \t]*(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)="
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s'\"]*)"
)


_LINES = re.compile(r"[^\n]*\n|[^\n]+$")


def _spans(text: str, key: str) -> list[tuple[int, int, int, int]]:
    """(line start, line end incl. newline, value start, value end) of each `key=` line."""
    found = []
    for line in _LINES.finditer(text):  # "\n" only: what a shell calls a line
        match = _LINE.match(text, line.start(), line.end())
        if match and match["key"] == key:
            found.append((line.start(), line.end(), match.start("value"), match.end("value")))
    return found


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def get_value(text: str, key: str) -> tuple[str, str] | None:
    """(value, as written) of the last `key=` line: the one a shell that sources it keeps."""
    spans = _spans(text, key)
    if not spans:
        return None
    _, _, start, end = spans[-1]
    raw = text[start:end]
    return _unquote(raw.strip()), raw


def set_value(text: str, key: str, raw: str) -> tuple[str, bool]:
    """`text` with the last `key=` line's value replaced by `raw` (or a line appended);
    True when a line was appended."""
    spans = _spans(text, key)
    if spans:
        _, _, start, end = spans[-1]
        return text[:start] + raw + text[end:], False
    lead = "" if not text or text.endswith("\n") else "\n"
    return text + lead + f"{key}={raw}\n", True


def remove_key(text: str, key: str) -> str:
    """`text` without its last `key=` line."""
    spans = _spans(text, key)
    if not spans:
        return text
    start, end, _, _ = spans[-1]
    return text[:start] + text[end:]
