"""`/gateway/ui…`: the page, the login, and the admin's actions.

Actions call the registry exactly as the management API does (`update` with only the client
label, `rotate_secret`, `delete`), with the browser's address as the audit entry's source;
the probe is the very function behind `POST /gateway/probe`. Reading is paged by the
registry (SQL, off the event loop), so the page costs the same at 10 000 instances as at 10.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from gateway.errors import (
    AdminAuthRequired,
    AdminAuthThrottled,
    InvalidConfig,
    NotFound,
    ReadOnlyInstance,
)
from gateway.http.appkeys import REGISTRY
from gateway.http.auth import require_admin
from gateway.http.status import run_probe
from gateway.instances.model import INSTANCE_ID_RE
from gateway.instances.paging import MAX_LIMIT
from gateway.ui.assets import asset
from gateway.ui.forms import confirm_delete, login_form, probe_answer, secret_shown
from gateway.ui.guard import (
    acting,
    current_session,
    end_session,
    read_form,
    redirect,
    refuse_cross_site,
    start_session,
    ui_handler,
)
from gateway.ui.html import Html, fill, url
from gateway.ui.layout import UI, page
from gateway.ui.panels import (
    LIMITS,
    Listing,
    audit_panel,
    filter_form,
    notice,
    pager,
    wiring_panel,
)
from gateway.ui.table import instance_rows
from gateway.ui.wiring import gather

__all__ = ["AUDIT_SHOWN", "routes"]

routes = web.RouteTableDef()
AUDIT_SHOWN = 20
MAX_LISTED = min(max(LIMITS), MAX_LIMIT)


def _instance_id(request: web.Request) -> str:
    instance_id = request.match_info["instance_id"]
    if not INSTANCE_ID_RE.match(instance_id):
        raise NotFound("No such instance: an id looks like pmem-0123456789abcdef.")
    return instance_id


def _listing(query: Mapping[str, str]) -> Listing:
    """What the table is asked for; anything malformed falls back to its default."""

    def number(name: str, default: int, low: int, high: int) -> int:
        try:
            value = int(query.get(name, ""))
        except ValueError:
            return default
        return value if low <= value <= high else default

    return Listing(
        client=query.get("client", "").strip()[:64],
        provider=query.get("provider", "").strip().lower()[:32],
        limit=number("limit", 50, 1, MAX_LISTED),
        cursor=query.get("cursor", "")[:512],
        start=number("start", 0, 0, 10**9),
    )


@routes.get(UI)
@ui_handler
async def main_page(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is None:
        return redirect(f"{UI}/login")
    listing = _listing(request.query)
    registry = request.app[REGISTRY]
    client, provider = listing.client or None, listing.provider or None

    async def table() -> tuple[Html, Html]:
        found = await registry.page(listing.limit, listing.cursor or None, client, provider)
        total = await registry.total(client, provider)
        usage = await registry.usage_many([r.instance_id for r in found.items])
        nav = pager(listing, len(found.items), total, found.next_cursor)
        return instance_rows(found.items, usage, session), nav

    (rows, nav), wiring, entries = await asyncio.gather(
        table(),
        gather(request.app),
        asyncio.to_thread(registry.audit.tail, AUDIT_SHOWN),
    )
    done = request.query.get("done", "")
    instance_id = request.query.get("instance", "")
    body = fill(
        "{notice}{wiring}"
        '<section id="instances"><h2>Instances</h2>{filters}{nav}{rows}{nav}</section>'
        "{audit}",
        notice=notice(done, instance_id) if INSTANCE_ID_RE.match(instance_id) else "",
        wiring=wiring_panel(wiring, session),
        filters=filter_form(listing),
        nav=nav,
        rows=rows,
        audit=audit_panel(entries),
    )
    return page("Instances", body, session=session)


@routes.get(UI + "/")
@ui_handler
async def trailing_slash(request: web.Request) -> web.StreamResponse:
    return redirect(UI)


@routes.get(UI + "/login")
@ui_handler
async def login_page(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        return redirect(UI)
    return page("Log in", login_form(), session=None)


@routes.post(UI + "/login")
@ui_handler
async def login(request: web.Request) -> web.StreamResponse:
    """The admin token from the form, checked by the API's own check (back-off, audit)."""
    refuse_cross_site(request)
    form = await read_form(request)
    try:
        require_admin(request, token=form.get("token", ""))
    except AdminAuthThrottled as exc:
        answer = page("Log in", login_form(exc.message), session=None, status=exc.status)
        answer.headers.update(exc.headers)
        return answer
    except AdminAuthRequired:
        problem = "That is not the admin token."
        return page("Log in", login_form(problem), session=None, status=401)
    response = redirect(UI)
    await start_session(request, response)
    return response


@routes.post(UI + "/logout")
@ui_handler
async def logout(request: web.Request) -> web.StreamResponse:
    await acting(request)
    response = redirect(f"{UI}/login")
    await end_session(request, response)
    return response


@routes.get(UI + "/instances/{instance_id}/delete")
@ui_handler
async def delete_page(request: web.Request) -> web.StreamResponse:
    """The confirmation step: what will go, and a button that really does it."""
    session = await current_session(request)
    if session is None:
        return redirect(f"{UI}/login")
    record = await request.app[REGISTRY].get(_instance_id(request))
    if record.source == "yaml":
        raise ReadOnlyInstance(
            f"Instance {record.instance_id} is managed in instances.yaml: remove it there "
            "(the gateway re-reads the file on change)."
        )
    return page("Delete", confirm_delete(record, session), session=session)


@routes.post(UI + "/instances/{instance_id}/delete")
@ui_handler
async def delete(request: web.Request) -> web.StreamResponse:
    _, form = await acting(request)
    instance_id = _instance_id(request)
    if form.get("confirm") != instance_id:
        raise InvalidConfig("Confirm the deletion on its own page first. Nothing was changed.")
    await request.app[REGISTRY].delete(instance_id, source=request.remote or "")
    return redirect(url(UI, done="deleted", instance=instance_id))


@routes.post(UI + "/instances/{instance_id}/client")
@ui_handler
async def rename(request: web.Request) -> web.StreamResponse:
    """A new client label: the API's PUT with only `client`."""
    _, form = await acting(request)
    instance_id = _instance_id(request)
    label = form.get("client", "").strip()
    await request.app[REGISTRY].update(instance_id, {"client": label}, source=request.remote or "")
    return redirect(url(UI, done="renamed", instance=instance_id) + f"#instance-{instance_id}")


@routes.post(UI + "/instances/{instance_id}/secret")
@ui_handler
async def rotate_secret(request: web.Request) -> web.StreamResponse:
    """A new instance secret, shown on this one answer (never cached, never logged)."""
    session, _ = await acting(request)
    instance_id = _instance_id(request)
    secret = await request.app[REGISTRY].rotate_secret(instance_id, source=request.remote or "")
    scoped = f"{request.scheme}://{request.host}/i/{instance_id}~{secret}"
    return page("New secret", secret_shown(instance_id, secret, scoped), session=session)


@routes.post(UI + "/probe")
@ui_handler
async def probe(request: web.Request) -> web.StreamResponse:
    session, _ = await acting(request)
    result = await run_probe(request.app)
    return page("Probe", probe_answer(result), session=session)


@routes.get(UI + "/static/{name}")
@ui_handler
async def static(request: web.Request) -> web.StreamResponse:
    found = asset(request.match_info["name"])
    if found is None:
        raise NotFound("No such file.")
    etag = f'"{found.etag}"'
    versioned = request.query.get("v") == found.etag
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache",
    }
    if request.headers.get("If-None-Match") == etag:
        response = web.Response(status=304, headers=headers)
    else:
        response = web.Response(body=found.body, headers=headers, content_type=found.content_type)
    return response
