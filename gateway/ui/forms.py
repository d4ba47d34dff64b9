"""The small pages: login, delete confirmation, a new secret (shown once), the probe's
answer, and errors."""

from __future__ import annotations

from gateway.http.shapes import ProbeResult
from gateway.instances.model import InstanceRecord
from gateway.ui.html import Html, fill, prose
from gateway.ui.layout import UI, csrf_field
from gateway.ui.sessions import Session
from gateway.ui.table import SOURCES, base_host, short_time

__all__ = ["confirm_delete", "login_form", "message", "probe_answer", "secret_shown"]


def login_form(problem: str = "") -> Html:
    shown = fill('<p class="problem" role="alert">{p}</p>', p=problem) if problem else Html("")
    return fill(
        '<section class="login"><h1>Log in</h1>{shown}'
        '<form method="post" action="{action}">'
        '<label>Admin token <input type="password" name="token" required autofocus '
        'autocomplete="current-password" maxlength="512"></label> '
        '<button type="submit">Log in</button></form>'
        '<p class="note">The token is in <code>admin.token</code> in the gateway\'s data dir '
        "(<code>~/.powermem/gateway/</code> by default), unless "
        "<code>POWERMEM_GATEWAY_ADMIN_TOKEN</code> sets it.</p></section>",
        shown=shown,
        action=f"{UI}/login",
    )


def confirm_delete(record: InstanceRecord, session: Session) -> Html:
    return fill(
        '<section class="confirm"><h1>Delete {id}?</h1>'
        "<dl><dt>Client</dt><dd>{client}</dd><dt>LLM</dt><dd>{provider} / {model}</dd>"
        "<dt>Key</dt><dd><code>{key}</code> for {host}</dd><dt>Source</dt><dd>{source}</dd>"
        "<dt>Created</dt><dd>{created}</dd></dl>"
        "<p>Requests that name this instance will be refused at once, in every gateway "
        "process; the tool that uses it has to be registered again.</p>"
        '<form method="post" action="{action}">{csrf}'
        '<input type="hidden" name="confirm" value="{id}">'
        '<button type="submit" class="danger">Delete {id}</button> '
        '<a href="{ui}">Cancel</a></form></section>',
        id=record.instance_id,
        client=record.client or "(no label)",
        provider=record.provider,
        model=record.model,
        key=record.masked_key or "(no key)",
        host=base_host(record),
        source=SOURCES.get(record.source, record.source),
        created=short_time(record.created_at),
        action=f"{UI}/instances/{record.instance_id}/delete",
        csrf=csrf_field(session),
        ui=UI,
    )


def secret_shown(instance_id: str, secret: str, scoped_url: str) -> Html:
    return fill(
        '<section class="secret"><h1>New secret for {id}</h1>'
        "<p>It is shown this once: the gateway keeps only its hash. The old secret no longer "
        "works, in any gateway process.</p>"
        '<p><label>Secret <input class="once" readonly value="{secret}" size="50"></label></p>'
        '<p><label>Scoped base URL <input class="once" readonly value="{scoped}" size="80">'
        "</label></p>"
        "<p>Give the tool either the scoped base URL, or the id with the secret in "
        "<code>X-PowerMem-Instance-Secret</code>.</p>"
        '<p><a href="{ui}">Back to the instances</a></p></section>',
        id=instance_id,
        secret=secret,
        scoped=scoped_url,
        ui=UI,
    )


def probe_answer(result: ProbeResult) -> Html:
    state = "ok" if result.wired else "fail"
    return fill(
        '<section class="probe-result"><h1>Probe: {verdict}</h1>'
        '<p class="state-{state}">{detail}</p>'
        "<p>powermem answered HTTP {status} to the probe's memory add.</p>"
        '<p><a href="{ui}#wiring">Back to the wiring</a></p></section>',
        verdict="wired" if result.wired else "not wired",
        state=state,
        detail=prose(result.detail),
        status=result.upstream_status if result.upstream_status is not None else "nothing",
        ui=UI,
    )


def message(title: str, text: str, *, login: bool = False) -> Html:
    back = (
        fill('<a href="{href}">Log in</a>', href=f"{UI}/login")
        if login
        else fill('<a href="{href}">Back to the instances</a>', href=UI)
    )
    return fill(
        '<section class="message"><h1>{title}</h1><p>{text}</p><p>{back}</p></section>',
        title=title,
        text=text,
        back=back,
    )
