"""The UI in a real browser (Debian's Chromium, headless, driven by Playwright).

Two coding tools registered the way `powermem-gateway register` does it, a memory add whose
LLM call fails at the provider with 401, a deletion through the confirmation page, the audit
trail; a forged form from another origin; and the read-only view with JavaScript off.
Set GATEWAY_UI_SCREENSHOT=<path> to keep a screenshot of the page (the README's docs/ui.png).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, expect

from gateway.clients.gatewayapi import GatewayAPI
from gateway.clients.knobs import Records
from gateway.clients.register import checked_fields, register
from gateway.clients.tools import tool_for
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.browser import chromium
from tests.conftest import ADMIN_TOKEN
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.frontserver import GatewayTestServer

RELAY_TOKEN = "relay-token-for-ui-tests"
GOOD_KEY = "sk-ant-good-key-0123456789abcdef"
WRONG_KEY = "sk-wrong-key-for-codex-0123456789"
StartGateway = Callable[..., Awaitable[GatewayTestServer]]


@pytest.fixture
async def providers() -> AsyncIterator[tuple[FakeAnthropic, FakeOpenAI]]:
    """Anthropic answers; the OpenAI-compatible one refuses every key with 401."""
    async with FakeAnthropic() as anthropic, FakeOpenAI() as openai:
        openai.fail(401, times=10_000)
        yield anthropic, openai


@pytest.fixture
async def two_tools(
    gateway_server: StartGateway,
    make_settings: Callable[..., Settings],
    providers: tuple[FakeAnthropic, FakeOpenAI],
    clean_env: Path,
) -> tuple[str, str, str]:
    """(gateway URL, claude-code's id, codex's id): each registered as `register` does it,
    its id saved where the tool looks for it."""
    anthropic, openai = providers
    server = await gateway_server(create_app(make_settings(relay_token=RELAY_TOKEN)))
    base = f"http://127.0.0.1:{server.port}"
    async with GatewayAPI(base, admin_token=ADMIN_TOKEN) as api:
        claude = await register(
            api,
            checked_fields(
                client="claude-code",
                provider="anthropic",
                model="claude-sonnet-4-5",
                api_key=GOOD_KEY,
                base_url=anthropic.url,
            ),
            tool_for("claude-code", home=clean_env, environ={}),
            Records(clean_env),
        )
        codex = await register(
            api,
            checked_fields(
                client="codex",
                provider="deepseek",
                model="deepseek-chat",
                api_key=WRONG_KEY,
                base_url=openai.url,
            ),
            tool_for("codex", home=clean_env, environ={}),
            Records(clean_env),
        )
    return base, claude.outcome.instance_id, codex.outcome.instance_id


async def memory_add(base: str, instance_id: str) -> aiohttp.ClientResponse:
    """A memory add bound to the instance; the fake powermem calls the relay with its
    baggage, as powermem's fact extraction would."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base + "/call-llm",
            json={"content": "I prefer tabs over spaces", "user_id": "ui-test"},
            headers={"X-PowerMem-Instance": instance_id, "X-Relay-Token": RELAY_TOKEN},
        ) as response,
    ):
        await response.read()
        return response


async def log_in(page: Page, base: str) -> None:
    await page.goto(base + "/gateway/ui")
    assert page.url == base + "/gateway/ui/login"  # no session: the login form first
    await page.fill("input[name=token]", ADMIN_TOKEN)
    await page.click("section.login button[type=submit]")
    await expect(page.locator("#instances")).to_be_visible()
    assert ADMIN_TOKEN not in page.url


def row(page: Page, instance_id: str) -> Locator:
    return page.locator(f'tr.instance[data-instance="{instance_id}"]')


def _audit(data_dir: Path) -> list[dict[str, Any]]:
    lines = (data_dir / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


async def test_an_admin_sees_both_tools_a_failure_then_deletes_one(
    two_tools: tuple[str, str, str],
    providers: tuple[FakeAnthropic, FakeOpenAI],
    tmp_path: Path,
) -> None:
    """Log in; two tools with their providers; a wrong key's 401 appears after a memory add;
    delete one through the confirmation page; the audit trail shows it, in the page and file."""
    base, claude, codex = two_tools
    anthropic, _ = providers
    assert (await memory_add(base, claude)).status == 200
    assert anthropic.calls[-1]["x_api_key"] == GOOD_KEY
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        fetched: list[str] = []
        problems: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        await log_in(page, base)
        rows = page.locator("tr.instance")
        await expect(rows).to_have_count(2)
        claude_row, codex_row = row(page, claude), row(page, codex)
        await expect(claude_row.locator(".provider")).to_have_text("anthropic")
        await expect(claude_row.locator("input[name=client]")).to_have_value("claude-code")
        await expect(claude_row.locator("td.calls")).to_have_text("1")
        await expect(codex_row.locator(".provider")).to_have_text("deepseek")
        await expect(codex_row.locator("input[name=client]")).to_have_value("codex")
        await expect(codex_row.locator("td.llm-errors")).to_have_text("0")
        await expect(codex_row.locator(".key")).to_have_text("sk-w…6789")
        # Both tools' saved ids point at live or registered instances.
        await expect(page.locator("tr.tool")).to_have_count(2)
        await expect(page.locator("tr.tool", has_text=claude).locator(".state")).to_have_text("ok")

        failed = await memory_add(base, codex)
        assert failed.headers["X-PowerMem-LLM-Error"].startswith("401")
        await page.reload()
        await expect(codex_row.locator("td.llm-errors")).to_have_text("1")
        await expect(codex_row.locator(".last-error .status")).to_have_text("401")
        await expect(codex_row.locator(".last-error .reason")).to_have_text("unauthorized")
        await expect(codex_row.locator("svg.chart rect.errors")).to_have_count(1)
        await expect(claude_row.locator("svg.chart rect.errors")).to_have_count(0)
        shot = tmp_path / "ui.png"
        # caret="initial": Playwright's default hides the caret with an inline style, which
        # the page's CSP refuses (and reports as a console error).
        await page.screenshot(path=str(shot), full_page=True, caret="initial")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if keep := os.environ.get("GATEWAY_UI_SCREENSHOT"):
            shutil.copyfile(shot, keep)

        await codex_row.locator("a.delete").click()
        await expect(page.locator("section.confirm h1")).to_have_text(f"Delete {codex}?")
        await page.click("section.confirm button.danger")
        await expect(page.locator("p.notice")).to_have_text(f"Instance {codex} was deleted.")
        await expect(rows).to_have_count(1)
        entry = page.locator("#audit tr.entry.action-delete")
        await expect(entry).to_have_count(1)
        await expect(entry).to_contain_text(codex)
        await expect(entry).to_contain_text("127.0.0.1")

        assert all(url.startswith(base + "/") for url in fetched), fetched
        assert problems == []
    deleted = [e for e in _audit(tmp_path / "data") if e["action"] == "delete"]
    assert [(e["instance_id"], e["client"], e["source"]) for e in deleted] == [
        (codex, "codex", "127.0.0.1")
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{base}/api/v1/instances/{codex}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as response,
    ):
        assert response.status == 404


async def test_a_form_forged_by_another_origin_deletes_nothing(
    two_tools: tuple[str, str, str], aiohttp_server: Any, tmp_path: Path
) -> None:
    """A page on another port of the same host (same site: the cookie goes along) posts a
    delete form to the UI in the logged-in browser: refused, the instance stays."""
    base, claude, _ = two_tools

    async def attack(request: web.Request) -> web.Response:
        form = (
            f'<form id="f" method="post" action="{base}/gateway/ui/instances/{claude}/delete">'
            f'<input name="confirm" value="{claude}"><input name="csrf" value="{"0" * 64}">'
            '</form><script>document.getElementById("f").submit()</script>'
        )
        return web.Response(text=form, content_type="text/html")

    evil = web.Application()
    evil.router.add_get("/", attack)
    attacker: TestServer = await aiohttp_server(evil, host="127.0.0.1")
    async with chromium(tmp_path / "profile") as browser:
        page = await browser.new_page()
        await log_in(page, base)
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.goto(str(attacker.make_url("/")))
        refused = await answer.value
        assert refused.status == 403
        assert (await refused.json())["error"]["code"] == "ORIGIN_REFUSED"
        await page.goto(base + "/gateway/ui")
        await expect(row(page, claude)).to_have_count(1)
    assert not [e for e in _audit(tmp_path / "data") if e["action"] == "delete"]


async def test_the_read_only_view_works_without_javascript(
    two_tools: tuple[str, str, str], tmp_path: Path
) -> None:
    """With JavaScript off: log in, read the table and its charts, page through it."""
    base, claude, codex = two_tools
    async with chromium(tmp_path / "profile", javascript=False) as browser:
        page = await browser.new_page()
        await log_in(page, base)
        await expect(page.locator("tr.instance")).to_have_count(2)
        await expect(page.locator("svg.chart")).to_have_count(2)
        await page.goto(base + "/gateway/ui?limit=1")
        await expect(page.locator("tr.instance")).to_have_count(1)
        first = await page.locator("tr.instance").get_attribute("data-instance")
        await page.locator("a.next").first.click()
        await expect(page.locator("tr.instance")).to_have_count(1)
        second = await page.locator("tr.instance").get_attribute("data-instance")
        assert {first, second} == {claude, codex}
        await expect(page.locator("a.next")).to_have_count(0)
        await page.select_option("select[name=provider]", "deepseek")
        await page.click("form.filters button")
        await expect(page.locator("tr.instance")).to_have_count(1)
        await expect(row(page, codex)).to_have_count(1)
