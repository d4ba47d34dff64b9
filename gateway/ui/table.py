"""The instances table: one row per instance, its usage, its chart and its actions.

Keys appear only as the registry masked them when the instance was stored
(`InstanceRecord.masked_key`): the plaintext key is never opened to build this page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.instances.model import InstanceRecord
from gateway.providers import PROVIDERS
from gateway.ui.chart import usage_chart
from gateway.ui.html import Html, fill, join
from gateway.ui.layout import UI, csrf_field
from gateway.ui.sessions import Session

__all__ = ["SOURCES", "base_host", "instance_rows", "short_time"]

SOURCES = {"api": "api", "implicit": "implicit", "yaml": "instances.yaml"}
CLIENT_INPUT_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}"

_HEAD = """<table class="instances">
<thead><tr>
<th scope="col">Client</th><th scope="col">LLM</th><th scope="col">Created / last used</th>
<th scope="col" class="num">Requests</th><th scope="col" class="num">LLM calls</th>
<th scope="col" class="num">Tokens in / out</th><th scope="col" class="num">Errors</th>
<th scope="col" class="num">LLM errors</th><th scope="col">Last LLM error</th>
<th scope="col">LLM calls, 24 h</th><th scope="col">Actions</th>
</tr></thead>
<tbody>
{rows}
</tbody>
</table>"""


def short_time(stamp: str | None) -> str:
    """`2025-01-02T03:04:05.678Z` → `2025-01-02 03:04 UTC`; `never` for none."""
    if not stamp:
        return "never"
    return f"{stamp[:10]} {stamp[11:16]} UTC"


def base_host(record: InstanceRecord) -> str:
    """The host the key goes to: the instance's base URL, or its provider's default."""
    if record.base_url:
        return urlsplit(record.base_url).netloc or record.base_url
    spec = PROVIDERS.get(record.provider)
    default = urlsplit(spec.default_base_url).netloc if spec else ""
    return f"{default} (default)" if default else "(default)"


def _number(value: Any) -> str:
    return f"{int(value or 0):,}"


def _client_cell(record: InstanceRecord, session: Session) -> Html:
    if record.source == "yaml":
        label = fill('<span class="client">{client}</span>', client=record.client or "—")
    else:
        label = fill(
            '<form class="rename" method="post" action="{action}">{csrf}'
            '<input name="client" value="{client}" maxlength="64" pattern="{pattern}" '
            'aria-label="client label of {id}" placeholder="(no label)">'
            '<button type="submit">Rename</button></form>',
            action=f"{UI}/instances/{record.instance_id}/client",
            csrf=csrf_field(session),
            client=record.client,
            pattern=CLIENT_INPUT_PATTERN,
            id=record.instance_id,
        )
    return fill(
        '{label}<code class="id">{id}</code> <span class="source src-{source}">{shown}</span>',
        label=label,
        id=record.instance_id,
        source=record.source,
        shown=SOURCES.get(record.source, record.source),
    )


def _last_error(usage: dict[str, Any]) -> Html:
    error = usage.get("last_llm_error")
    if not error:
        return Html('<span class="none">none</span>')
    return fill(
        '<span class="status">{status}</span> <span class="reason">{reason}</span>'
        '<br><span class="at">{at}</span>',
        status=error.get("status", "?"),
        reason=error.get("reason", ""),
        at=short_time(error.get("at")),
    )


def _actions(record: InstanceRecord, session: Session) -> Html:
    if record.source == "yaml":
        return Html('<span class="none">edit instances.yaml</span>')
    return fill(
        '<form class="rotate" method="post" action="{rotate}">{csrf}'
        '<button type="submit">New secret</button></form>'
        '<a class="delete" href="{delete}">Delete…</a>',
        rotate=f"{UI}/instances/{record.instance_id}/secret",
        csrf=csrf_field(session),
        delete=f"{UI}/instances/{record.instance_id}/delete",
    )


def _row(record: InstanceRecord, usage: dict[str, Any], session: Session) -> Html:
    errors = int(usage.get("llm_errors") or 0)
    return fill(
        '<tr class="instance{failing}" id="instance-{id}" data-instance="{id}">'
        '<td class="who">{client}</td>'
        '<td class="llm"><span class="provider">{provider}</span> '
        '<span class="model">{model}</span><br><code class="key">{key}</code> '
        '<span class="host">{host}</span></td>'
        '<td class="when"><span class="created">{created}</span><br>'
        '<span class="used">{used}</span></td>'
        '<td class="num requests">{requests}</td>'
        '<td class="num calls">{calls}</td>'
        '<td class="num tokens">{tokens_in} / {tokens_out}</td>'
        '<td class="num errors">{errors}</td>'
        '<td class="num llm-errors">{llm_errors}</td>'
        '<td class="last-error">{last_error}</td>'
        '<td class="day">{chart}</td>'
        '<td class="actions">{actions}</td></tr>',
        failing=" failing" if errors else "",
        id=record.instance_id,
        client=_client_cell(record, session),
        provider=record.provider,
        model=record.model,
        key=record.masked_key or "(no key)",
        host=base_host(record),
        created=short_time(record.created_at),
        used=short_time(usage.get("last_used_at")),
        requests=_number(usage.get("requests")),
        calls=_number(usage.get("relay_calls")),
        tokens_in=_number(usage.get("prompt_tokens")),
        tokens_out=_number(usage.get("completion_tokens")),
        errors=_number(usage.get("errors")),
        llm_errors=_number(errors),
        last_error=_last_error(usage),
        chart=usage_chart(usage.get("last_24h") or []),
        actions=_actions(record, session),
    )


def instance_rows(
    records: Sequence[InstanceRecord], usage: dict[str, dict[str, Any]], session: Session
) -> Html:
    if not records:
        return Html('<p class="empty">No instance matches.</p>')
    rows = join(_row(r, usage.get(r.instance_id, {}), session) for r in records)
    return fill(_HEAD, rows=rows)
