"""Pages, totals, usage and LLM failures as the API, the CLI and the dashboard read them.

Issue 11.8 (pages with an opaque cursor and filters), 12.2 (counts from SQL), 10.4 and 16
(LLM failures per instance, 24 hourly buckets, where an instance came from).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from freezegun import freeze_time

from gateway.errors import InvalidConfig
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.model import InstanceConfig, InstanceRecord
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.conftest import OperatorFactory

Client = TestClient[web.Request, web.Application]
YAML = """instances:
  pmem-b-file:
    client: cursor
    provider: ollama
    model: llama3
  pmem-a-file:
    client: codex
    provider: ollama
    model: qwen
"""


def config(n: int, client: str = "", provider: str = "openai") -> InstanceConfig:
    return InstanceConfig.parse(
        provider=provider, model="m", api_key=f"sk-list-{n:05d}-abcdefgh", client=client
    )


async def walk(
    registry: Registry, limit: int, **filters: str | None
) -> tuple[list[InstanceRecord], int]:
    seen: list[InstanceRecord] = []
    cursor, pages = None, 0
    while True:
        page = await registry.page(limit, cursor, **filters)
        seen += page.items
        pages += 1
        if page.next_cursor is None:
            return seen, pages
        assert len(page.items) == limit
        cursor = page.next_cursor


async def test_pages_walk_file_instances_then_stored_ones_once_each(
    make_settings: Callable[..., Settings],
) -> None:
    """Every instance exactly once, instances.yaml first by id, then in creation order."""
    settings = make_settings()
    settings.instances_file.write_text(YAML)
    registry = await Registry.open(settings)
    try:
        made = [(await registry.resolve(config(n)))[0] for n in range(7)]
        expected = ["pmem-a-file", "pmem-b-file"] + [r.instance_id for r in made]
        for limit in (1, 2, 4, 9, 50):
            seen, pages = await walk(registry, limit)
            assert [r.instance_id for r in seen] == expected
            assert pages == max(1, -(-len(expected) // limit))
        assert await registry.total() == 9
    finally:
        await registry.close()


async def test_filters_by_client_and_provider_page_and_count_alike(
    make_settings: Callable[..., Settings],
) -> None:
    """client= and provider= narrow pages and totals the same way, file instances included."""
    settings = make_settings()
    settings.instances_file.write_text(YAML)
    registry = await Registry.open(settings)
    try:
        for n in range(6):
            await registry.resolve(
                config(
                    n,
                    client="cursor" if n % 2 else "codex",
                    provider="openai" if n < 3 else "deepseek",
                )
            )
        for filters in (
            {"client": "cursor"},
            {"provider": "ollama"},
            {"client": "codex", "provider": "deepseek"},
            {"client": "nobody"},
        ):
            seen, _ = await walk(registry, 2, **filters)
            assert all(getattr(r, k) == v for r in seen for k, v in filters.items())
            assert len(seen) == await registry.total(**filters)
        assert await registry.total(client="cursor") == 4  # 3 stored + 1 file
    finally:
        await registry.close()


async def test_instances_made_while_paging_are_neither_repeated_nor_skipped(
    registry: Registry,
) -> None:
    """Registrations between two pages come after the cursor; nothing seen twice or lost."""
    first = [(await registry.resolve(config(n)))[0] for n in range(5)]
    page = await registry.page(3)
    more = [(await registry.resolve(config(n)))[0] for n in range(5, 8)]
    rest = await registry.page(10, page.next_cursor)
    ids = [r.instance_id for r in page.items + rest.items]
    assert ids == [r.instance_id for r in first + more]
    assert rest.next_cursor is None


@pytest.mark.parametrize("cursor", ["nonsense", "eyJ4IjogMX0", "W10", "!!!", "WyJzIiwgMV0"])
async def test_a_cursor_we_did_not_give_out_is_a_clear_400(registry: Registry, cursor: str) -> None:
    """Forged or damaged cursors are refused, never a 500."""
    with pytest.raises(InvalidConfig, match="cursor") as caught:
        await registry.page(10, cursor)
    assert caught.value.status == 400


async def test_page_sizes_are_clamped(registry: Registry) -> None:
    """A limit of 0 or a million gives between 1 and 1000 items per page."""
    for n in range(3):
        await registry.resolve(config(n))
    assert len((await registry.page(0)).items) == 1
    assert len((await registry.page(10**6)).items) == 3


async def test_llm_failures_show_in_the_instance_with_a_day_of_hourly_buckets(
    operator: OperatorFactory, make_settings: Callable[..., Settings]
) -> None:
    """`llm_failed` → llm_errors, last_llm_error and the hour's bucket in GET /instances/{id}."""
    client: Client = await operator(create_app(make_settings()))
    registry = client.server.app[REGISTRY]
    # Frozen near the real time: the flush's thread prunes old hours by the real clock
    # (freezegun leaves threads alone), so a fixed date fails a day later.
    base = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=1)
    with freeze_time(base) as clock:
        record, _ = await registry.resolve(config(1), implicit=True)
        registry.count(record.instance_id, relay_calls=3, requests=3)
        registry.llm_failed(
            record.instance_id, 401, "Incorrect API key provided: sk-list-00001-abcdefgh"
        )
        clock.tick(3600)
        registry.count(record.instance_id, relay_calls=1)
        registry.llm_failed(record.instance_id, 429, "rate limited\r\nX-Injected: yes")
        shown = await (await client.get(f"/api/v1/instances/{record.instance_id}")).json()
    data = shown["data"]
    usage = data["usage"]
    assert data["source"] == "implicit"
    assert (usage["relay_calls"], usage["llm_errors"], usage["requests"]) == (4, 2, 3)
    assert usage["last_llm_error"]["status"] == 429
    assert (
        "\n" not in usage["last_llm_error"]["reason"]
        and "\r" not in usage["last_llm_error"]["reason"]
    )
    later = base + timedelta(hours=1)
    assert usage["last_llm_error"]["at"].startswith(later.strftime("%Y-%m-%dT%H:30"))
    hours = usage["last_24h"]
    assert len(hours) == 24
    assert hours[-1] == {
        "hour": later.strftime("%Y-%m-%dT%H:00:00Z"),
        "llm_calls": 1,
        "llm_errors": 1,
    }
    assert hours[-2] == {
        "hour": base.strftime("%Y-%m-%dT%H:00:00Z"),
        "llm_calls": 3,
        "llm_errors": 1,
    }
    assert "sk-list-00001-abcdefgh" not in json.dumps(shown)


async def test_usage_counted_in_one_process_is_read_in_another(
    make_settings: Callable[..., Settings],
) -> None:
    """Two processes count the same instance: the totals and the last failure add up."""
    a, b = await Registry.open(make_settings()), await Registry.open(make_settings())
    try:
        record, _ = await a.resolve(config(1))
        for registry, status in ((a, 500), (b, 502)):
            registry.count(record.instance_id, relay_calls=2, relay_errors=1)
            registry.llm_failed(record.instance_id, status, f"upstream {status}")
            await asyncio.sleep(0.002)
        await a.flush_usage()
        usage = await b.usage(record.instance_id)
        assert (usage["relay_calls"], usage["relay_errors"], usage["llm_errors"]) == (4, 2, 2)
        assert usage["last_llm_error"]["status"] == 502
        many = await a.usage_many([record.instance_id, "pmem-unknown"])
        assert many["pmem-unknown"]["requests"] == 0 and len(many["pmem-unknown"]["last_24h"]) == 24
    finally:
        await a.close()
        await b.close()


async def test_unknown_counters_are_a_programming_error(registry: Registry) -> None:
    """A misspelt counter name fails loudly instead of counting nowhere."""
    with pytest.raises(TypeError, match="reqeusts"):
        registry.count("pmem-0000000000000000", reqeusts=1)


async def test_each_instance_says_where_it_came_from(
    make_settings: Callable[..., Settings],
) -> None:
    """api, implicit and yaml sources, and only the file's ones are read-only."""
    settings = make_settings()
    settings.instances_file.write_text(YAML)
    registry = await Registry.open(settings)
    try:
        api, _ = await registry.resolve(config(1))
        implicit, _ = await registry.resolve(config(2), implicit=True)
        sources = {
            r.instance_id: (r.source, r.public()["read_only"]) for r in await registry.list()
        }
        assert sources[api.instance_id] == ("api", False)
        assert sources[implicit.instance_id] == ("implicit", False)
        assert sources["pmem-a-file"] == ("yaml", True)
    finally:
        await registry.close()
