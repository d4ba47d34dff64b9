"""Building HTML safely: every value is escaped unless it already is HTML.

`fill("<td>{name}</td>", name=record.client)` escapes the client label; a piece built by
`fill` or `join` is `Html` and goes in as it is. Nothing else turns text into markup, so a
label such as `<script>` can only ever be shown, never run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from urllib.parse import urlencode

__all__ = ["Html", "esc", "fill", "join", "prose", "url"]


class Html(str):
    """Text that already is HTML (built here): inserted as it is."""

    __slots__ = ()


def esc(value: object) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def fill(template: str, **values: object) -> Html:
    """`template` with each `{name}` replaced by its value, escaped unless it is `Html`."""
    return Html(template.format(**{name: esc(value) for name, value in values.items()}))


def join(parts: Iterable[object], separator: str = "") -> Html:
    return Html(separator.join(esc(part) for part in parts))


def prose(text: str) -> Html:
    """Plain text where `backticked` spans become <code> (escaped first, like everything)."""
    parts = str(esc(text)).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: show the text as it is
        return esc(text)
    return Html("".join(f"<code>{p}</code>" if n % 2 else p for n, p in enumerate(parts)))


def url(path: str, **query: str | int | None) -> str:
    """A path on this gateway with its query (empty values left out); escape it when used."""
    pairs = [(k, str(v)) for k, v in query.items() if v not in (None, "")]
    return f"{path}?{urlencode(pairs)}" if pairs else path
