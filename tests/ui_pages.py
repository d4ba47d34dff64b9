"""Helpers for the UI tests: log in through the form, read a page's CSRF token."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import ADMIN_TOKEN

__all__ = ["csrf_of", "log_in", "rows_of"]

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
_ROW = re.compile(r'<tr class="instance[^"]*" id="instance-[^"]*" data-instance="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def rows_of(html: str) -> list[str]:
    """The instance ids of the table's rows, in order."""
    return _ROW.findall(html)


async def log_in(client: Any, token: str = ADMIN_TOKEN) -> str:
    """Log in through the form (the client keeps the cookie); the main page's CSRF token."""
    response = await client.post("/gateway/ui/login", data={"token": token}, allow_redirects=False)
    assert response.status == 303, await response.text()
    page = await client.get("/gateway/ui")
    assert page.status == 200
    return csrf_of(await page.text())
