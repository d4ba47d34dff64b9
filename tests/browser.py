"""Debian's Chromium, driven headless by Playwright, for the UI's browser tests.

Never downloads a browser: it runs `/usr/bin/chromium` (`apt-get install -y chromium`, which
`.ci/run` does). When that browser is missing or does not start, the test fails and says
why; it never skips, so a green run always means the page was really tried in a browser.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Error, async_playwright

__all__ = ["CHROMIUM", "chromium"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium(profile: Path, *, javascript: bool = True) -> AsyncIterator[BrowserContext]:
    """A fresh headless Chromium with its own new profile folder."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the UI's browser tests need Debian's Chromium "
            "(`apt-get install -y chromium`, as .ci/run does); they are never skipped."
        )
    assert not profile.exists(), "each browser gets a fresh profile"
    async with async_playwright() as playwright:
        try:
            context = await playwright.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=ARGS,
                headless=True,
                java_script_enabled=javascript,
                viewport={"width": 1680, "height": 1000},
            )
        except Error as exc:
            pytest.fail(f"{CHROMIUM} did not start under Playwright: {exc}")
        try:
            yield context
        finally:
            await context.close()
