"""Who may use the UI: the session cookie, the CSRF token of every action, and form bodies.

Every action is a form POST that must carry its session's CSRF token. Before it reaches
this code the front door has already refused a browser request whose `Origin` is another
site's (unless allowed); here `Sec-Fetch-Site` (sent by current browsers) must also say the
form came from this origin. The cookie is SameSite=Strict and HttpOnly, and only ever sent to
`/gateway/ui…` (never to powermem's paths on the same port).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.errors import (
    CsrfRefused,
    GatewayError,
    InvalidBody,
    LoginRequired,
    UnsupportedMediaType,
)
from gateway.http.appkeys import ADMIN, SETTINGS
from gateway.http.bodies import read_body
from gateway.ui.forms import message
from gateway.ui.layout import UI, page, secured
from gateway.ui.sessions import MAX_AGE, Session, SessionStore

__all__ = [
    "COOKIE",
    "UI_SESSIONS",
    "acting",
    "current_session",
    "end_session",
    "read_form",
    "redirect",
    "refuse_cross_site",
    "start_session",
    "ui_ctx",
    "ui_handler",
]

COOKIE = "powermem_gateway_ui"
MAX_FORM = 16 * 1024
MAX_FIELDS = 16
UI_SESSIONS = web.AppKey("ui_sessions", SessionStore)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def ui_ctx(app: web.Application) -> AsyncIterator[None]:
    """The session list, beside the registry in the data dir (which the registry made)."""
    app[UI_SESSIONS] = await asyncio.to_thread(
        SessionStore, app[SETTINGS].data_dir, app[ADMIN].token
    )
    yield


def redirect(location: str) -> web.Response:
    """303: the browser follows with a GET (so a reload never repeats an action)."""
    return web.Response(status=303, headers={"Location": location})


def ui_handler(handler: Handler) -> Handler:
    """The security headers on every answer; a `GatewayError` as an HTML page, not JSON."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except GatewayError as exc:
            login = isinstance(exc, LoginRequired)
            response = page(
                "Refused" if exc.status < 500 else "Error",
                message(_title(exc), exc.message, login=login),
                session=None,
                status=exc.status,
            )
            response.headers.update(exc.headers)
        return secured(response)

    return wrapped


def _title(exc: GatewayError) -> str:
    if isinstance(exc, LoginRequired):
        return "Please log in"
    if isinstance(exc, CsrfRefused):
        return "This form was refused"
    return f"{exc.status}: {exc.code.replace('_', ' ').lower()}"


async def current_session(request: web.Request) -> Session | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    return await asyncio.to_thread(request.app[UI_SESSIONS].find, cookie)


async def start_session(request: web.Request, response: web.StreamResponse) -> None:
    session = await asyncio.to_thread(request.app[UI_SESSIONS].open, request.remote)
    response.set_cookie(
        COOKIE,
        session.cookie,
        max_age=MAX_AGE,
        path=UI,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    await asyncio.to_thread(request.app[UI_SESSIONS].close, request.cookies.get(COOKIE))
    response.del_cookie(COOKIE, path=UI, httponly=True, samesite="Strict")


def refuse_cross_site(request: web.Request) -> None:
    """A form sent by another site (another port of this host counts: it is another origin)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfRefused(
            "This form was sent from another site and was refused; use the gateway's own page."
        )


async def read_form(request: web.Request) -> dict[str, str]:
    """A urlencoded form as a dict; each field at most once, the whole body bounded."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("Send the form as application/x-www-form-urlencoded.")
    text = await read_body(request, MAX_FORM)
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS
        )
    except ValueError:
        raise InvalidBody("The form could not be read.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidBody(f"The form gives {name[:32]!r} more than once.")
        form[name] = value
    return form


async def acting(request: web.Request) -> tuple[Session, dict[str, str]]:
    """An action's session and form, once the session is live and the CSRF token right."""
    refuse_cross_site(request)
    session = await current_session(request)
    if session is None:
        raise LoginRequired("Your session has ended (or never began): log in again.")
    form = await read_form(request)
    if not session.csrf_matches(form.get("csrf")):
        raise CsrfRefused(
            "This form's security token is missing or belongs to another session; reload the "
            "page and try again. Nothing was changed."
        )
    return session, form
