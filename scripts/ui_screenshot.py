"""Take the README's picture of the admin page (docs/ui.png), with made-up data.

    python scripts/ui_screenshot.py [docs/ui.png]

Needs the test extras (Playwright) and Debian's Chromium (`apt-get install -y chromium`).
A gateway runs in this process on a temporary data dir, in front of a stand-in powermem
that answers 200; four tools are registered and their ids saved where each looks; 24 hours
of usage (one tool's key refused by its provider) are written into the registry's usage
table; then the page is logged into and photographed. Nothing is sent anywhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.clients.tools import tool_for  # noqa: E402
from gateway.front.runner import GatewayRunner  # noqa: E402
from gateway.http.app import create_app  # noqa: E402
from gateway.http.appkeys import REGISTRY, RELAY  # noqa: E402
from gateway.instances.model import InstanceConfig  # noqa: E402
from gateway.instances.store import UsageDelta  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from tests.browser import ARGS, CHROMIUM  # noqa: E402

TOKEN = "demo-admin-token-0123456789abcdef"  # noqa: S105 - a throw-away demo gateway
TOOLS = [
    ("claude-code", "anthropic", "claude-sonnet-4-5", "sk-ant-api03-demo-key-7Qx2", ""),
    ("cursor", "openai", "gpt-4.1-mini", "sk-proj-demo-key-0000-Jf3a", ""),
    ("codex", "deepseek", "deepseek-chat", "sk-demo-revoked-key-91b2", ""),
    ("opencode", "ollama", "qwen2.5-coder", "", "http://127.0.0.1:11434/v1"),
]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _powermem(request: web.Request) -> web.Response:
    return web.json_response({"success": True, "data": []})


def _usage(rng: random.Random, failing: bool) -> UsageDelta:
    now = int(datetime.now(UTC).timestamp()) // 3600
    delta = UsageDelta(last_used_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
    delta.last_used_at = (delta.last_used_at or "").replace("+00:00", "Z")
    for hour in range(now - 23, now + 1):
        if rng.random() < 0.35:
            continue
        calls = rng.randint(1, 14)
        errors = calls if failing and hour >= now - 2 else 0
        delta.hours[hour] = [calls, errors]
        delta.relay_calls += calls
        delta.llm_errors += errors
        delta.relay_errors += errors
        delta.requests += calls + rng.randint(0, 6)
        if not errors:
            delta.prompt_tokens += calls * rng.randint(600, 1400)
            delta.completion_tokens += calls * rng.randint(40, 160)
    if failing:
        at = (datetime.now(UTC) - timedelta(minutes=7)).isoformat(timespec="milliseconds")
        delta.last_llm_error = (401, "unauthorized", at.replace("+00:00", "Z"))
    return delta


async def shoot(out: Path) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="pmgw-ui-demo-") as tmp:
        work = Path(tmp)
        os.environ["HOME"] = str(work / "home")
        (work / "home").mkdir()
        stub = web.Application()
        stub.router.add_route("*", "/{tail:.*}", _powermem)
        stub_runner = web.AppRunner(stub)
        await stub_runner.setup()
        upstream_port = _port()
        await web.TCPSite(stub_runner, "127.0.0.1", upstream_port).start()
        port = _port()
        settings = Settings(
            data_dir=work / "data",
            instances_file=work / "instances.yaml",
            env_file=work / "powermem.env",
            upstream=f"http://127.0.0.1:{upstream_port}",
            admin_token=TOKEN,
            port=port,
        )
        app = create_app(settings)
        runner = GatewayRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        base = f"http://127.0.0.1:{port}"
        try:
            registry = app[REGISTRY]
            rng = random.Random(16)  # noqa: S311 - made-up usage, not a secret
            deltas = {}
            for client, provider, model, key, base_url in TOOLS:
                config = InstanceConfig.parse(
                    client=client, provider=provider, model=model, api_key=key, base_url=base_url
                )
                done = await registry.register(config, source="127.0.0.1", privileged=True)
                tool = tool_for(client, home=work / "home", environ={}, cursor_global=True)
                if tool is not None and tool.id_file is not None:
                    tool.id_file.write(done.record.instance_id)
                deltas[done.record.instance_id] = _usage(rng, failing=client == "codex")
                for _ in range(3):
                    app[RELAY].stats.seen(done.record.instance_id, proxied=True)
            store = registry.store
            await store.run(store.store.add_usage, deltas)
            async with async_playwright() as playwright:
                context = await playwright.chromium.launch_persistent_context(
                    str(work / "profile"),
                    executable_path=str(CHROMIUM),
                    args=ARGS,
                    headless=True,
                    viewport={"width": 1600, "height": 900},
                )
                page = await context.new_page()
                await page.goto(base + "/gateway/ui/login")
                await page.fill("input[name=token]", TOKEN)
                await page.click("section.login button[type=submit]")
                await page.wait_for_selector("#instances")
                await page.screenshot(path=str(out), full_page=True, caret="initial")
                await context.close()
        finally:
            await runner.cleanup()
            await stub_runner.cleanup()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "ui.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(target))
    print(f"wrote {target}")
