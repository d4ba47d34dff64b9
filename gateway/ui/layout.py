"""Every page's frame, and the headers every UI answer carries.

The Content-Security-Policy allows scripts, styles and images from the gateway only, and no
inline script or style at all (the page has none); forms post only back to the gateway; no
other site may frame the page. Pages are never cached: they hold CSRF tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway import __version__
from gateway.ui.assets import asset_url
from gateway.ui.html import Html, fill
from gateway.ui.sessions import Session

__all__ = ["CSP", "SECURITY_HEADERS", "UI", "csrf_field", "page", "secured"]

UI = "/gateway/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it a browser sends `Origin: null` on form posts, which the front
    # door rightly refuses. same-origin gives other sites no referrer, and us our origin.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_FRAME = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · powermem-gateway</title>
<link rel="icon" href="{icon}" type="image/svg+xml">
<link rel="stylesheet" href="{css}">
<script src="{js}" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="{ui}">powermem-gateway</a> <span class="version">{version}</span>
{logout}
</header>
<main>
{body}
</main>
</body>
</html>
"""


def csrf_field(session: Session) -> Html:
    return fill('<input type="hidden" name="csrf" value="{token}">', token=session.csrf)


def secured(response: web.StreamResponse) -> web.StreamResponse:
    """The headers of every UI answer; only a static asset sets its own `Cache-Control`."""
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control":
            response.headers.setdefault(name, value)
        else:
            response.headers[name] = value
    return response


def page(title: str, body: Html, *, session: Session | None, status: int = 200) -> web.Response:
    """A whole HTML page; with a session, it carries the logout button."""
    logout = Html("")
    if session is not None:
        logout = fill(
            '<form class="logout" method="post" action="{action}">{csrf}'
            '<button type="submit">Log out</button></form>',
            action=f"{UI}/logout",
            csrf=csrf_field(session),
        )
    text = fill(
        _FRAME,
        title=title,
        icon=asset_url("icon.svg"),
        css=asset_url("ui.css"),
        js=asset_url("ui.js"),
        ui=UI,
        version=__version__,
        logout=logout,
        body=body,
    )
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    secured(response)
    return response
