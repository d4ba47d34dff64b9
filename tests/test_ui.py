"""The admin page at /gateway/ui, through the whole gateway (front, bridge, app): login,
sessions, CSRF, the Content-Security-Policy, masking, and the actions' audit trail."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.settings import Settings
from gateway.ui.layout import CSP
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, OperatorClient, OperatorFactory
from tests.ui_pages import csrf_of, log_in, rows_of

KEY = "sk-live-ui-0123456789abcdefXYZ"
CONFIG = {"client": "cursor", "provider": "openai", "model": "gpt-4o-mini", "api_key": KEY}


async def register(gateway: OperatorClient, /, **fields: str) -> str:
    response = await gateway.post("/api/v1/instances", json=CONFIG | fields)
    assert response.status in (200, 201), await response.text()
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "data" / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


# -- login and sessions ---------------------------------------------------------------------


async def test_without_a_session_the_page_sends_the_browser_to_the_login_form(
    gateway: OperatorClient,
) -> None:
    """No cookie: a 303 to the login form, which asks for the token in a POST form."""
    response = await gateway.get("/gateway/ui", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/gateway/ui/login"
    login = await gateway.get("/gateway/ui/login")
    html = await login.text()
    assert login.status == 200
    assert '<form method="post" action="/gateway/ui/login">' in html
    assert 'type="password" name="token"' in html


async def test_login_sets_a_strict_http_only_cookie_for_the_ui_only(
    gateway: OperatorClient,
) -> None:
    """The right token gives a session cookie: HttpOnly, SameSite=Strict, Path=/gateway/ui,
    bounded in time; the token appears in no URL and no answer."""
    response = await gateway.post(
        "/gateway/ui/login", data={"token": ADMIN_TOKEN}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/gateway/ui"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("powermem_gateway_ui=")
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "Path=/gateway/ui" in cookie and "SameSite=Strict" in cookie
    assert ADMIN_TOKEN not in cookie
    page = await gateway.get("/gateway/ui")
    assert page.status == 200
    assert ADMIN_TOKEN not in await page.text()


async def test_a_wrong_token_is_refused_audited_and_backed_off(
    gateway: OperatorClient, tmp_path: Path
) -> None:
    """A wrong token: 401 and an admin_auth_failed audit entry, like the API; after a few,
    the address waits (429 with Retry-After), even with the right token."""
    response = await gateway.post("/gateway/ui/login", data={"token": "guess"})
    assert response.status == 401
    assert "That is not the admin token." in await response.text()
    assert "Set-Cookie" not in response.headers
    failed = [e for e in audit(tmp_path) if e["action"] == "admin_auth_failed"]
    assert [e["source"] for e in failed] == ["127.0.0.1"]
    # A connection each: a kept-alive one refused twice in a row would also be held
    # (tests/test_refused_hold.py), which is not what this test is about.
    close = {"Connection": "close"}
    statuses = [
        (
            await gateway.post("/gateway/ui/login", data={"token": f"guess-{n}"}, headers=close)
        ).status
        for n in range(8)
    ]
    assert statuses[-1] == 429
    throttled = await gateway.post("/gateway/ui/login", data={"token": ADMIN_TOKEN}, headers=close)
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert "Set-Cookie" not in throttled.headers


async def test_the_token_is_never_taken_from_a_url(gateway: OperatorClient) -> None:
    """A token in the query string opens nothing: neither the page nor the login."""
    page = await gateway.get(f"/gateway/ui?token={ADMIN_TOKEN}", allow_redirects=False)
    assert page.status == 303
    login = await gateway.post(
        f"/gateway/ui/login?token={ADMIN_TOKEN}",
        data={},
        allow_redirects=False,
    )
    assert login.status == 401
    assert "Set-Cookie" not in login.headers


async def test_the_admin_bearer_header_is_no_session(gateway: OperatorClient) -> None:
    """The page wants its cookie: an Authorization header alone does not open it."""
    response = await gateway.get("/gateway/ui", headers=ADMIN_AUTH, allow_redirects=False)
    assert response.status == 303


async def test_logout_ends_the_session(gateway: OperatorClient) -> None:
    """After logout the old cookie opens nothing, even when a copy of it is replayed."""
    csrf = await log_in(gateway)
    cookie = gateway.session.cookie_jar.filter_cookies(gateway.make_url("/gateway/ui"))
    stolen = cookie["powermem_gateway_ui"].value
    response = await gateway.post("/gateway/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/gateway/ui/login"
    gateway.session.cookie_jar.clear()
    replay = await gateway.get(
        "/gateway/ui", headers={"Cookie": f"powermem_gateway_ui={stolen}"}, allow_redirects=False
    )
    assert replay.status == 303


async def test_a_session_is_known_to_every_process_on_the_data_dir(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> None:
    """Two gateway processes on one data dir (as `serve --workers 2` runs them): a login
    through one is a session in the other, and a logout through one ends it in both."""
    settings = make_settings()
    first, second = await operator(create_app(settings)), await operator(create_app(settings))
    csrf = await log_in(first)
    cookie = first.session.cookie_jar.filter_cookies(first.make_url("/gateway/ui"))
    sent = {"Cookie": f"powermem_gateway_ui={cookie['powermem_gateway_ui'].value}"}
    assert (await second.get("/gateway/ui", headers=sent, allow_redirects=False)).status == 200
    await first.post("/gateway/ui/logout", data={"csrf": csrf})
    assert (await second.get("/gateway/ui", headers=sent, allow_redirects=False)).status == 303


async def test_a_new_admin_token_ends_every_session(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> None:
    """A session opened with one admin token is nothing once the gateway runs with another."""
    old = await operator(create_app(make_settings()))
    await log_in(old)
    cookie = old.session.cookie_jar.filter_cookies(old.make_url("/gateway/ui"))
    sent = {"Cookie": f"powermem_gateway_ui={cookie['powermem_gateway_ui'].value}"}
    new = await operator(create_app(make_settings(admin_token="another-admin-token-0123456789")))
    assert (await new.get("/gateway/ui", headers=sent, allow_redirects=False)).status == 303


# -- CSRF and the front door --------------------------------------------------------------

ACTIONS = ("client", "secret", "delete")


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("token", ["missing", "wrong", "another session's"])
async def test_an_action_without_its_csrf_token_changes_nothing(
    operator: OperatorFactory,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    action: str,
    token: str,
) -> None:
    """Rename, new secret, delete: refused (403) without the session's own CSRF token;
    the instance and the audit trail stay as they were."""
    settings = make_settings()
    gateway = await operator(create_app(settings))
    other = await operator(create_app(settings))
    instance_id = await register(gateway)
    await log_in(gateway)
    forms = {
        "missing": {},
        "wrong": {"csrf": "0" * 64},
        "another session's": {"csrf": await log_in(other)},
    }
    form = forms[token] | {"client": "renamed", "confirm": instance_id}
    before = audit(tmp_path)
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/{action}", data=form, allow_redirects=False
    )
    assert response.status == 403
    assert "security token" in await response.text()
    shown = await gateway.get(f"/api/v1/instances/{instance_id}")
    data = (await shown.json())["data"]
    assert (data["client"], data["has_secret"]) == ("cursor", False)
    assert [e for e in audit(tmp_path) if e["action"] != "admin_auth_failed"] == [
        e for e in before if e["action"] != "admin_auth_failed"
    ]


async def test_a_form_from_another_origin_is_refused_by_the_front_door(
    gateway: OperatorClient,
) -> None:
    """A cross-origin form post with the session cookie (another port of the same host is
    the same site, so SameSite lets the cookie through) and even the right token: 403."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/delete",
        data={"csrf": csrf, "confirm": instance_id},
        headers={"Origin": "http://127.0.0.1:3000"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert (await response.json())["error"]["code"] == "ORIGIN_REFUSED"
    assert (await gateway.get(f"/api/v1/instances/{instance_id}")).status == 200


async def test_an_allowed_cors_origin_still_needs_the_csrf_token(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> None:
    """An origin on --allowed-origin passes the front door, but not the UI: it cannot read
    the CSRF token (no credentials in CORS), and the browser says the form is cross-site."""
    gateway = await operator(create_app(make_settings(allowed_origins=("http://tools.example",))))
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    for extra in ({}, {"csrf": csrf}):
        response = await gateway.post(
            f"/gateway/ui/instances/{instance_id}/delete",
            data={"confirm": instance_id, **extra},
            headers={"Origin": "http://tools.example", "Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
        )
        assert response.status == 403
        assert "Access-Control-Allow-Credentials" not in response.headers
    assert (await gateway.get(f"/api/v1/instances/{instance_id}")).status == 200


async def test_a_login_form_from_another_site_is_refused(gateway: OperatorClient) -> None:
    """Sec-Fetch-Site: same-site (another port) on the login form: no session is made."""
    response = await gateway.post(
        "/gateway/ui/login",
        data={"token": ADMIN_TOKEN},
        headers={"Sec-Fetch-Site": "same-site"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert "Set-Cookie" not in response.headers


# -- headers, markup, masking ---------------------------------------------------------------

_STRICT = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


async def test_every_ui_answer_carries_the_strict_csp(gateway: OperatorClient) -> None:
    """Pages, redirects, errors and assets alike; pages are never cached."""
    instance_id = await register(gateway)
    checked = [
        await gateway.get("/gateway/ui", allow_redirects=False),
        await gateway.get("/gateway/ui/login"),
        await gateway.post("/gateway/ui/login", data={"token": "wrong"}),
        await gateway.get("/gateway/ui/static/ui.css"),
    ]
    await log_in(gateway)
    checked += [
        await gateway.get("/gateway/ui"),
        await gateway.get(f"/gateway/ui/instances/{instance_id}/delete"),
        await gateway.get("/gateway/ui/instances/pmem-0000000000000000/delete"),
    ]
    for response in checked:
        for name, value in _STRICT.items():
            assert response.headers.get(name) == value, (response.url, name)
    assert "'unsafe-inline'" not in CSP and "default-src 'none'" in CSP
    assert "frame-ancestors 'none'" in CSP and "form-action 'self'" in CSP
    for response in checked[:3] + checked[4:]:
        assert response.headers["Cache-Control"] == "no-store"


async def test_the_page_has_no_inline_script_style_or_outside_fetch(
    gateway: OperatorClient,
) -> None:
    """Every script, stylesheet and icon comes from /gateway/ui/static; no inline script,
    no style attribute, no event handler attribute."""
    await register(gateway)
    await log_in(gateway)
    html = await (await gateway.get("/gateway/ui")).text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"<style", html) == []
    assert re.findall(r"\sstyle=", html) == []
    assert re.findall(r"\son[a-z]+=", html) == []
    fetched = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert fetched and all(u.startswith(("/gateway/ui", "#")) for u in fetched), fetched
    for url in re.findall(r'(?:src|href)="(/gateway/ui/static/[^"]*)"', html):
        asset = await gateway.get(url.replace("&amp;", "&"))
        assert asset.status == 200
        assert "immutable" in asset.headers["Cache-Control"]


async def test_the_assets_are_served_and_nothing_else_from_the_folder(
    gateway: OperatorClient,
) -> None:
    """The stylesheet and script with their types; any other name, or a way out, 404."""
    css = await gateway.get("/gateway/ui/static/ui.css")
    js = await gateway.get("/gateway/ui/static/ui.js")
    assert css.content_type == "text/css" and js.content_type == "text/javascript"
    again = await gateway.get(
        "/gateway/ui/static/ui.css", headers={"If-None-Match": css.headers["ETag"]}
    )
    assert again.status == 304
    for name in ("__init__.py", "..%2Froutes.py", "%2e%2e%2fguard.py", "UI.CSS"):
        assert (await gateway.get(f"/gateway/ui/static/{name}")).status == 404


async def test_keys_are_masked_on_every_page(gateway: OperatorClient) -> None:
    """The table and the confirmation page show `sk-l…fXYZ`, never the key."""
    instance_id = await register(gateway)
    await log_in(gateway)
    for path in ("/gateway/ui", f"/gateway/ui/instances/{instance_id}/delete"):
        html = await (await gateway.get(path)).text()
        assert "sk-l…fXYZ" in html
        assert KEY not in html and KEY[4:-4] not in html


async def test_text_from_clients_is_shown_never_run(gateway: OperatorClient) -> None:
    """A model name with markup is escaped wherever it appears."""
    instance_id = await register(gateway, model='<script>alert("x")</script>')
    await log_in(gateway)
    for path in ("/gateway/ui", f"/gateway/ui/instances/{instance_id}/delete"):
        html = await (await gateway.get(path)).text()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


# -- actions -------------------------------------------------------------------------------


async def test_rename_goes_through_the_registry_and_the_audit_trail(
    gateway: OperatorClient, tmp_path: Path
) -> None:
    """A new label is the API's PUT with only `client`: the key and the rest stay."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/client",
        data={"csrf": csrf, "client": "cursor-work"},
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith("/gateway/ui?done=renamed")
    data = (await (await gateway.get(f"/api/v1/instances/{instance_id}")).json())["data"]
    assert (data["client"], data["api_key"], data["model"]) == (
        "cursor-work",
        "sk-l…fXYZ",
        "gpt-4o-mini",
    )
    entry = audit(tmp_path)[-1]
    assert (entry["action"], entry["instance_id"], entry["fields"], entry["source"]) == (
        "update",
        instance_id,
        ["client"],
        "127.0.0.1",
    )
    page = await (await gateway.get(response.headers["Location"])).text()
    assert f"The client label of {instance_id} was changed." in page


async def test_a_bad_label_is_refused_with_the_apis_message(gateway: OperatorClient) -> None:
    """The registry validates the label; the page shows why, and nothing changed."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/client",
        data={"csrf": csrf, "client": "bad label!"},
    )
    assert response.status == 400
    assert "client must be a short label" in await response.text()
    data = (await (await gateway.get(f"/api/v1/instances/{instance_id}")).json())["data"]
    assert data["client"] == "cursor"


async def test_a_new_secret_is_shown_once_and_works(
    gateway: OperatorClient, tmp_path: Path
) -> None:
    """The secret page shows it (and its scoped URL) once, uncached; the registry accepts it."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/secret", data={"csrf": csrf}
    )
    html = await response.text()
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    secret = re.search(r'value="(pmis-[^"]+)"', html)
    assert secret
    assert f"/i/{instance_id}~{secret.group(1)}" in html
    registry = gateway.server.app[REGISTRY]
    record = await registry.get(instance_id)
    assert registry.verify_secret(record, secret.group(1))
    assert audit(tmp_path)[-1]["action"] == "secret_rotate"
    assert secret.group(1) not in await (await gateway.get("/gateway/ui")).text()


async def test_delete_needs_its_confirmation_page(gateway: OperatorClient, tmp_path: Path) -> None:
    """The button of the confirmation page deletes; a post without that step does not."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    confirm = await (await gateway.get(f"/gateway/ui/instances/{instance_id}/delete")).text()
    assert f'name="confirm" value="{instance_id}"' in confirm
    skipped = await gateway.post(f"/gateway/ui/instances/{instance_id}/delete", data={"csrf": csrf})
    assert skipped.status == 400
    assert (await gateway.get(f"/api/v1/instances/{instance_id}")).status == 200
    response = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/delete",
        data={"csrf": csrf_of(confirm), "confirm": instance_id},
        allow_redirects=False,
    )
    assert response.status == 303
    assert (await gateway.get(f"/api/v1/instances/{instance_id}")).status == 404
    entry = audit(tmp_path)[-1]
    assert (entry["action"], entry["instance_id"], entry["source"]) == (
        "delete",
        instance_id,
        "127.0.0.1",
    )
    page = await (await gateway.get(response.headers["Location"])).text()
    assert rows_of(page) == []
    assert f"Instance {instance_id} was deleted." in page


async def test_instances_yaml_rows_are_read_only(
    operator: OperatorFactory, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """An instance from instances.yaml has no rename, secret or delete form; a forged post
    is refused by the registry (409)."""
    (tmp_path / "instances.yaml").write_text(
        "instances:\n  team-openai:\n    client: team\n    provider: openai\n"
        "    model: gpt-4o-mini\n    api_key: sk-yaml-0123456789abcdef\n"
    )
    gateway = await operator(create_app(make_settings()))
    csrf = await log_in(gateway)
    html = await (await gateway.get("/gateway/ui")).text()
    assert rows_of(html) == ["team-openai"]
    assert "instances.yaml" in html and "/team-openai/" not in html
    assert (await gateway.get("/gateway/ui/instances/team-openai/delete")).status == 409
    response = await gateway.post(
        "/gateway/ui/instances/team-openai/delete",
        data={"csrf": csrf, "confirm": "team-openai"},
    )
    assert response.status == 409
    assert "instances.yaml" in await response.text()


# -- the wiring -----------------------------------------------------------------------------


async def test_the_wiring_shows_powermem_the_relay_and_each_tools_saved_id(
    gateway: OperatorClient, clean_env: Path
) -> None:
    """Health and readiness from the (fake) powermem; no LLM call yet; a saved id that is
    registered (not used yet) and one that is not."""
    instance_id = await register(gateway, client="claude-code")
    (clean_env / ".powermem").mkdir()
    (clean_env / ".powermem" / "instance.id").write_text(instance_id + "\n")
    (clean_env / ".codex").mkdir()
    (clean_env / ".codex" / "powermem-instance.id").write_text("pmem-00000000000000ff\n")
    await log_in(gateway)
    html = await (await gateway.get("/gateway/ui")).text()
    checks = dict(
        re.findall(
            r'<tr class="check"><th scope="row">([^<]+)</th><td><span class="state state-(\w+)"',
            html,
        )
    )
    assert checks["powermem answers"] == "ok"
    assert checks["memory service ready"] == "ok"
    assert checks["LLM calls carry baggage"] == "unknown"
    tools = dict(
        re.findall(
            r'<tr class="tool"><th scope="row">([^<]+)</th><td><span class="state state-(\w+)"',
            html,
        )
    )
    assert tools == {"claude-code": "warn", "codex": "fail"}
    assert "~/.powermem/instance.id" in html and "not registered on this gateway" in html


async def test_the_probe_button_runs_the_probe(gateway: OperatorClient) -> None:
    """The fake powermem answers without calling the relay: the probe says it is not wired."""
    csrf = await log_in(gateway)
    response = await gateway.post("/gateway/ui/probe", data={"csrf": csrf})
    html = await response.text()
    assert response.status == 200
    assert "Probe: not wired" in html
    assert "without calling the relay" in html


async def test_an_unknown_instance_is_a_404_page(gateway: OperatorClient) -> None:
    """A deleted or made-up id: an HTML 404, never a traceback or the JSON envelope."""
    await log_in(gateway)
    for path in ("pmem-0000000000000000", "not-an-id"):
        response = await gateway.get(f"/gateway/ui/instances/{path}/delete")
        assert response.status == 404
        assert response.content_type == "text/html"


async def test_a_form_body_is_bounded(gateway: OperatorClient) -> None:
    """A form past 16 KiB, or one giving a field twice, is a 400 and changes nothing."""
    instance_id = await register(gateway)
    csrf = await log_in(gateway)
    big = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/client",
        data={"csrf": csrf, "client": "x" * 20_000},
    )
    assert big.status == 400
    twice = await gateway.post(
        f"/gateway/ui/instances/{instance_id}/client",
        data=f"csrf={csrf}&client=a&client=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert twice.status == 400


def test_the_ui_is_registered_on_the_app(make_settings: Callable[..., Settings]) -> None:
    """create_app mounts the page: /gateway/ui answers through the same app as the API."""
    app: web.Application = create_app(make_settings())
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/gateway/ui", "/gateway/ui/login", "/gateway/ui/logout"} <= paths
