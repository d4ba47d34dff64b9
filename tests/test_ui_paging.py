"""The admin page at 10 000 instances: server-side pages and filters, every instance once."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.seed import seed
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.conftest import ADMIN_AUTH, OperatorClient, OperatorFactory
from tests.ui_pages import log_in, rows_of

COUNT = 10_000
_NEXT = re.compile(r'<a class="next" rel="next" href="([^"]+)"')
_SHOWING = re.compile(r'<span class="count">([^<]+)</span>')


@pytest.fixture
async def crowded(
    tmp_path: Path, operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> tuple[OperatorClient, list[str]]:
    """A gateway whose registry holds 10 000 instances (seeded as benchmarks/seed.py does)."""
    ids = await asyncio.to_thread(seed, tmp_path / "data", tmp_path / "instances.yaml", COUNT)
    assert len(set(ids)) == COUNT
    return await operator(create_app(make_settings())), ids


async def test_paging_through_10000_instances_shows_each_once(
    crowded: tuple[OperatorClient, list[str]],
) -> None:
    """Pages of 200 from the registry's cursor: 50 pages, 10 000 distinct rows, in order."""
    gateway, ids = crowded
    await log_in(gateway)
    seen: list[str] = []
    path: str | None = "/gateway/ui?limit=200"
    pages = 0
    while path is not None:
        text = await (await gateway.get(path)).text()
        rows = rows_of(text)
        assert len(rows) == 200
        counts = _SHOWING.findall(text)
        assert counts[0] == f"{len(seen) + 1:,}–{len(seen) + 200:,} of {COUNT:,} instance(s)"
        seen += rows
        pages += 1
        found = _NEXT.search(text)
        path = html.unescape(found.group(1)) if found else None
    assert pages == COUNT // 200
    assert len(set(seen)) == COUNT and set(seen) == set(ids)


async def test_filters_are_applied_by_the_registry(
    crowded: tuple[OperatorClient, list[str]],
) -> None:
    """A client or provider filter among 10 000: only the matches, with their own count."""
    gateway, _ = crowded
    mine = []
    for n in range(3):
        response = await gateway.post(
            "/api/v1/instances",
            json={
                "client": "cursor",
                "provider": "deepseek",
                "model": "deepseek-chat",
                "api_key": f"sk-filter-{n}-0123456789abcdef",
            },
            headers=ADMIN_AUTH,  # past the instance cap, as the operator may
        )
        mine.append((await response.json())["data"]["instance_id"])
    await log_in(gateway)
    cursor = await (await gateway.get("/gateway/ui?client=cursor")).text()
    assert rows_of(cursor) == mine
    assert _SHOWING.findall(cursor)[0] == "1–3 of 3 instance(s)"
    deepseek = await (await gateway.get("/gateway/ui?provider=deepseek&limit=2")).text()
    assert rows_of(deepseek) == mine[:2]
    nobody = await (await gateway.get("/gateway/ui?provider=anthropic")).text()
    assert rows_of(nobody) == [] and "No instance matches." in nobody
    default = await (await gateway.get("/gateway/ui")).text()
    assert len(rows_of(default)) == 50
    assert _SHOWING.findall(default)[0] == f"1–50 of {COUNT + 3:,} instance(s)"


async def test_a_cursor_that_was_not_given_out_is_a_clear_400(
    crowded: tuple[OperatorClient, list[str]],
) -> None:
    """A made-up cursor: the registry's message on an HTML page, not a 500."""
    gateway, _ = crowded
    await log_in(gateway)
    response = await gateway.get("/gateway/ui?cursor=bm90LWEtY3Vyc29y")
    assert response.status == 400
    assert "cursor is not one this gateway gave out" in await response.text()
