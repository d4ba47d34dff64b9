"""Bounded registrations (issue 12.1): caps per address and in total, expiry of idle ones.

As an abuser would: a flood of registrations from one address, explicit or by LLM headers,
is cut with a 429 in the envelope and nothing is created or forwarded; an address cycling
through its own IPv6 /64 buys nothing; the total cap holds whoever asks. The admin is never
capped. Implicit instances nobody used for the configured time expire, with an audit entry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from freezegun import freeze_time

from gateway.errors import InstanceCapReached, RateLimited
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY as REGISTRY_KEY
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.observe.audit import AUDIT_FILE
from gateway.policy.backoff import address_key
from gateway.policy.ratelimit import RateLimits, TokenBuckets
from gateway.settings import Settings
from tests.fakes.upstream import Recorder
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]


def config(n: int) -> InstanceConfig:
    return InstanceConfig.parse(provider="openai", model="m", api_key=f"sk-cap-{n:06d}-abcdefgh")


def llm_headers(n: int) -> dict[str, str]:
    return {
        "X-PowerMem-LLM-Provider": "openai",
        "X-PowerMem-LLM-Model": "m",
        "X-PowerMem-LLM-Api-Key": f"sk-cap-{n:06d}-abcdefgh",
    }


async def test_registrations_over_the_hourly_cap_get_429_and_create_nothing(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """The third new instance within the hour from one address is refused, with Retry-After."""
    settings = make_settings(new_instances_per_client_per_hour=2)
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    for n in range(2):
        body = {"provider": "openai", "model": "m", "api_key": f"sk-cap-{n:06d}-abcdefgh"}
        assert (await client.post("/api/v1/instances", json=body)).status == 201
    body = {"provider": "openai", "model": "m", "api_key": "sk-cap-000099-abcdefgh"}
    response = await client.post("/api/v1/instances", json=body)
    answer = await response.json()
    assert response.status == 429
    assert answer["success"] is False and answer["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert "admin token" in answer["error"]["message"]
    assert int(response.headers["Retry-After"]) > 60
    assert body["api_key"] not in json.dumps(answer)
    # Re-registering what exists is not a new instance: still answered.
    again = {"provider": "openai", "model": "m", "api_key": "sk-cap-000000-abcdefgh"}
    assert (await client.post("/api/v1/instances", json=again)).status == 200
    registry = client.server.app[REGISTRY_KEY]
    assert await registry.total() == 2


async def test_implicit_registrations_over_the_cap_are_not_forwarded(
    aiohttp_client: Any, make_settings: Callable[..., Settings], recorder: Recorder
) -> None:
    """LLM headers that would make a new instance past the cap get 429; powermem sees nothing."""
    client: Client = await aiohttp_client(
        GatewayTestServer(create_app(make_settings(new_instances_per_client_per_hour=3)))
    )
    for n in range(3):
        assert (await client.get("/api/v1/memories", headers=llm_headers(n))).status == 200
    response = await client.get("/api/v1/memories", headers=llm_headers(3))
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert len(recorder.requests) == 3
    # Known configurations keep working at the cap.
    assert (await client.get("/api/v1/memories", headers=llm_headers(1))).status == 200


async def test_the_hourly_cap_refills_with_time(make_settings: Callable[..., Settings]) -> None:
    """An hour after hitting the cap, the address may register again."""
    with freeze_time("2026-11-24 12:00:00") as clock:
        registry = await Registry.open(make_settings(new_instances_per_client_per_hour=2))
        try:
            for n in range(2):
                await registry.resolve(config(n), source="192.0.2.7")
            with pytest.raises(InstanceCapReached):
                await registry.resolve(config(2), source="192.0.2.7")
            await registry.resolve(config(3), source="192.0.2.8")  # another address
            clock.tick(3600)
            assert (await registry.resolve(config(2), source="192.0.2.7"))[1] is True
        finally:
            await registry.close()


async def test_cycling_through_an_ipv6_block_shares_one_allowance(
    make_settings: Callable[..., Settings],
) -> None:
    """Addresses of one /64 count together; another /64 has its own allowance."""
    registry = await Registry.open(make_settings(new_instances_per_client_per_hour=2))
    try:
        await registry.resolve(config(0), source="2001:db8:1:2::1")
        await registry.resolve(config(1), source="2001:db8:1:2:ffff::9")
        with pytest.raises(InstanceCapReached):
            await registry.resolve(config(2), source="2001:db8:1:2:abcd::42")
        await registry.resolve(config(3), source="2001:db8:1:3::1")
    finally:
        await registry.close()


async def test_the_total_cap_holds_for_everyone_but_the_admin(
    make_settings: Callable[..., Settings],
) -> None:
    """At max_instances new ones are refused from any address; privileged callers pass."""
    registry = await Registry.open(make_settings(max_instances=3))
    try:
        for n in range(3):
            await registry.resolve(config(n), source=f"198.51.100.{n}")
        with pytest.raises(InstanceCapReached, match="maximum of 3") as caught:
            await registry.resolve(config(9), source="198.51.100.200", implicit=True)
        assert caught.value.status == 429
        assert await registry.total() == 3
        _, created = await registry.resolve(config(9), source="x", privileged=True)
        assert created and await registry.total() == 4
    finally:
        await registry.close()


async def test_a_concurrent_flood_never_passes_the_total_cap(
    make_settings: Callable[..., Settings],
) -> None:
    """Fifty distinct configurations at once from two processes: exactly the cap is created."""
    settings = make_settings(max_instances=10, new_instances_per_client_per_hour=0)
    a, b = await Registry.open(settings), await Registry.open(settings)
    try:
        results = await asyncio.gather(
            *((a if n % 2 else b).resolve(config(n), source=f"203.0.113.{n}") for n in range(50)),
            return_exceptions=True,
        )
        assert sum(1 for r in results if isinstance(r, tuple)) == 10
        assert all(isinstance(r, InstanceCapReached) for r in results if not isinstance(r, tuple))
        assert await a.total() == 10
    finally:
        await a.close()
        await b.close()


async def test_idle_implicit_instances_expire_with_an_audit_entry(
    make_settings: Callable[..., Settings],
) -> None:
    """Unused past the TTL, an implicit instance goes; used, explicit and new ones stay."""
    settings = make_settings(implicit_instance_ttl=3600.0)
    with freeze_time("2026-11-24 12:00:00") as clock:
        registry = await Registry.open(settings)
        try:
            idle, _ = await registry.resolve(config(0), implicit=True)
            used, _ = await registry.resolve(config(1), implicit=True)
            explicit, _ = await registry.resolve(config(2))
            clock.tick(3000)
            registry.count(used.instance_id, requests=1)
            recent, _ = await registry.resolve(config(3), implicit=True)
            clock.tick(1000)
            assert await registry.expire_idle() == 1
            assert {r.instance_id for r in await registry.list()} == {
                used.instance_id,
                explicit.instance_id,
                recent.instance_id,
            }
            # The same headers make it again, under the same id.
            again, created = await registry.resolve(config(0), implicit=True)
            assert created and again.instance_id == idle.instance_id
        finally:
            await registry.close()
    entries = [
        json.loads(line) for line in (settings.data_dir / AUDIT_FILE).read_text().splitlines()
    ]
    (expired,) = [e for e in entries if e["action"] == "expire"]
    assert expired["instance_id"] == idle.instance_id


async def test_no_ttl_means_implicit_instances_stay(make_settings: Callable[..., Settings]) -> None:
    """With the TTL switched off nothing expires, however old."""
    with freeze_time("2026-01-01") as clock:
        registry = await Registry.open(make_settings(implicit_instance_ttl=None))
        try:
            await registry.resolve(config(0), implicit=True)
            clock.tick(10 * 365 * 86400)
            assert await registry.expire_idle() == 0
            assert await registry.total() == 1
        finally:
            await registry.close()


def test_limiter_tables_stay_bounded_under_a_flood_of_addresses() -> None:
    """A million-address flood cannot grow a bucket table past its bound."""
    buckets = TokenBuckets(5, 60.0, max_keys=1000)
    for n in range(20_000):
        buckets.hit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(buckets) == 1000


def test_client_limits_answer_429_with_retry_after() -> None:
    """Per-address request limits: the first N pass, the next one says when to come back."""
    limits = RateLimits(client_per_minute=2, instance_per_minute=1)
    limits.check_client("192.0.2.1")
    limits.check_client("192.0.2.1")
    with pytest.raises(RateLimited) as caught:
        limits.check_client("192.0.2.1")
    assert caught.value.status == 429
    assert int(caught.value.headers["Retry-After"]) >= 1
    limits.check_client("192.0.2.2")
    limits.check_instance("pmem-a")
    with pytest.raises(RateLimited, match="pmem-a"):
        limits.check_instance("pmem-a")
    RateLimits().check_client("anything")  # no limit configured: nothing to refuse


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
        ("", ""),
    ],
)
def test_client_keys(address: str, key: str) -> None:
    """IPv4 as is (mapped ones too), IPv6 by /64, anything else verbatim."""
    assert address_key(address) == key
