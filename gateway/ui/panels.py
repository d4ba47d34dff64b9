"""The parts of the main page around the table: wiring, filters, pages, audit trail, notices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.providers import PROVIDERS
from gateway.ui.html import Html, fill, join, prose, url
from gateway.ui.layout import UI, csrf_field
from gateway.ui.sessions import Session
from gateway.ui.wiring import Wiring

__all__ = [
    "LIMITS",
    "NOTICES",
    "Listing",
    "audit_panel",
    "filter_form",
    "notice",
    "pager",
    "wiring_panel",
]

LIMITS = (25, 50, 100, 200)
# What an action's redirect may announce (`?done=`): fixed texts, never text from the URL.
NOTICES = {
    "renamed": "The client label of {id} was changed.",
    "deleted": "Instance {id} was deleted.",
}
_STATE_TEXT = {"ok": "ok", "warn": "check", "fail": "problem", "unknown": "unknown"}


@dataclass(frozen=True)
class Listing:
    """What the visitor asked the table for."""

    client: str = ""
    provider: str = ""
    limit: int = 50
    cursor: str = ""
    start: int = 0


def _state(state: str) -> Html:
    return fill('<span class="state state-{s}">{text}</span>', s=state, text=_STATE_TEXT[state])


def wiring_panel(wiring: Wiring, session: Session) -> Html:
    checks = join(
        fill(
            '<tr class="check"><th scope="row">{name}</th><td>{state}</td><td>{detail}</td></tr>',
            name=c.name,
            state=_state(c.state),
            detail=prose(c.detail),
        )
        for c in wiring.checks
    )
    tools = join(
        fill(
            '<tr class="tool"><th scope="row">{tool}</th><td>{state}</td>'
            "<td><code>{where}</code> → <code>{id}</code>: {detail}</td></tr>",
            tool=t.tool,
            state=_state(t.state),
            where=t.where,
            id=t.instance_id or "?",
            detail=prose(t.detail),
        )
        for t in wiring.tools
    )
    return fill(
        '<section id="wiring"><h2>Wiring</h2><table class="checks">{checks}</table>'
        '<form class="probe" method="post" action="{probe}">{csrf}'
        '<button type="submit">Run the probe</button> '
        "<span>adds a throw-away memory through powermem and watches its LLM call reach the "
        "relay with the request's baggage</span></form>"
        "<h3>Coding tools</h3>"
        '<table class="checks tools">{tools}</table><p class="note">{note}</p></section>',
        checks=checks,
        probe=f"{UI}/probe",
        csrf=csrf_field(session),
        tools=tools,
        note=prose(wiring.tools_note),
    )


def filter_form(listing: Listing) -> Html:
    options = join(
        fill(
            '<option value="{value}"{selected}>{label}</option>',
            value=name,
            selected=Html(" selected") if name == listing.provider else "",
            label=name or "any provider",
        )
        for name in ("", *sorted(PROVIDERS))
    )
    limits = join(
        fill(
            '<option value="{n}"{selected}>{n} a page</option>',
            n=n,
            selected=Html(" selected") if n == listing.limit else "",
        )
        for n in LIMITS
    )
    return fill(
        '<form class="filters" method="get" action="{ui}">'
        '<label>Client <input name="client" value="{client}" maxlength="64" '
        'placeholder="any client"></label> '
        '<label>Provider <select name="provider" class="autosubmit">{options}</select></label> '
        '<label>Show <select name="limit" class="autosubmit">{limits}</select></label> '
        '<button type="submit">Filter</button> <a href="{ui}">Clear</a></form>',
        ui=UI,
        client=listing.client,
        options=options,
        limits=limits,
    )


def pager(listing: Listing, shown: int, total: int, next_cursor: str | None) -> Html:
    first = listing.start + 1 if shown else 0
    text = f"{first:,}–{listing.start + shown:,} of {total:,} instance(s)"
    links: list[Html] = []
    filters = {"client": listing.client, "provider": listing.provider}
    if listing.cursor:
        links.append(
            fill('<a class="first" href="{href}">« First page</a>', href=url(UI, **filters))
        )
    if next_cursor:
        href = url(
            UI,
            **filters,
            limit=listing.limit,
            cursor=next_cursor,
            start=listing.start + shown,
        )
        links.append(fill('<a class="next" rel="next" href="{href}">Next page »</a>', href=href))
    return fill(
        '<nav class="pager"><span class="count">{text}</span> {links}</nav>',
        text=text,
        links=join(links, " "),
    )


def audit_panel(entries: Sequence[dict[str, object]]) -> Html:
    if not entries:
        rows = Html('<tr><td colspan="5" class="none">no entries yet</td></tr>')
    else:
        rows = join(
            fill(
                '<tr class="entry action-{action}"><td>{ts}</td><td class="action">{action}</td>'
                "<td><code>{id}</code></td><td>{client}</td><td>{source}</td></tr>",
                ts=str(e.get("ts") or "")[:19].replace("T", " "),
                action=e.get("action") or "",
                id=e.get("instance_id") or "",
                client=e.get("client") or "",
                source=e.get("source") or "",
            )
            for e in entries
        )
    return fill(
        '<section id="audit"><h2>Audit trail</h2><p class="note">The newest entries of '
        "audit.log in the gateway's data dir (UTC); changes made here, through the API and by "
        "the CLI all land there.</p>"
        '<table class="audit"><thead><tr><th scope="col">When</th><th scope="col">Action</th>'
        '<th scope="col">Instance</th><th scope="col">Client</th><th scope="col">From</th>'
        "</tr></thead><tbody>{rows}</tbody></table></section>",
        rows=rows,
    )


def notice(done: str, instance_id: str) -> Html:
    text = NOTICES.get(done)
    if text is None:
        return Html("")
    return fill('<p class="notice" role="status">{text}</p>', text=text.format(id=instance_id))
