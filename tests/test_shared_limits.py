"""Rate limits across replicas: counted in a real Redis when a URL is given (issue 13)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.errors import InstanceCapReached, RateLimited
from gateway.policy.ratelimit import RateLimits
from tests.cluster import start_replicas, team_env
from tests.conftest import SpawnGateway, free_port


async def test_two_replicas_share_one_allowance_per_instance_and_per_client(
    redis_url: str,
) -> None:
    """Hits on two replicas' limits add up: the allowance is the cluster's, not each one's."""
    replicas = [
        RateLimits(instance_per_minute=3, client_per_minute=5, redis_url=redis_url)
        for _ in range(2)
    ]
    try:
        for n in range(3):
            await replicas[n % 2].admit_instance("pmem-a")
        with pytest.raises(RateLimited) as caught:
            await replicas[1].admit_instance("pmem-a")
        assert caught.value.status == 429 and int(caught.value.headers["Retry-After"]) >= 1
        await replicas[1].admit_instance("pmem-b")  # another instance, another count
        for n in range(5):
            await replicas[n % 2].admit_client("192.0.2.1", route="GET /api/v1/memories")
        with pytest.raises(RateLimited, match="this address"):
            await replicas[0].admit_client("192.0.2.1", route="GET /api/v1/memories")
        await replicas[0].admit_client("192.0.2.2", route="GET /api/v1/memories")
    finally:
        for limits in replicas:
            await limits.close()


async def test_new_instances_per_address_are_counted_across_replicas(redis_url: str) -> None:
    """The per-address registration cap holds however the registrations are spread."""
    replicas = [RateLimits(registrations_per_hour=2, redis_url=redis_url) for _ in range(2)]
    try:
        await replicas[0].admit_registration("198.51.100.7")
        await replicas[1].admit_registration("198.51.100.7")
        with pytest.raises(InstanceCapReached):
            await replicas[0].admit_registration("198.51.100.7")
    finally:
        for limits in replicas:
            await limits.close()


async def test_without_redis_reachable_each_process_limits_on_its_own() -> None:
    """Redis down is not an outage: the process's own buckets apply instead."""
    limits = RateLimits(instance_per_minute=2, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        await limits.admit_instance("pmem-a")
        await limits.admit_instance("pmem-a")
        with pytest.raises(RateLimited):
            await limits.admit_instance("pmem-a")
    finally:
        await limits.close()


async def test_two_gateway_replicas_refuse_the_request_past_the_cluster_wide_limit(
    spawn_gateway: SpawnGateway,
    upstream: TestServer,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four requests per minute for one instance, alternated over two replicas: the fifth,
    wherever it lands, is a 429."""
    team_env(monkeypatch)
    a, b = await start_replicas(
        spawn_gateway,
        2,
        upstream=str(upstream.make_url("")).rstrip("/"),
        database_url=database_url,
        root=tmp_path,
        extra=("--instance-rate-limit", "4", "--redis-url", redis_url),
    )
    headers = {
        "X-PowerMem-LLM-Provider": "openai",
        "X-PowerMem-LLM-Model": "gpt-4o",
        "X-PowerMem-LLM-Api-Key": "sk-shared-limit-0123456789abcdef",
    }
    async with aiohttp.ClientSession() as session:
        statuses = []
        for n in range(6):
            replica = (a, b)[n % 2]
            async with session.get(replica.url + "/api/v1/memories", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 200, 200, 429, 429]
