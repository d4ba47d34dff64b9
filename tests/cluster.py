"""Several real gateway replicas on one PostgreSQL registry, and a steady stream of bound
requests through them, counting every answer that served an outdated configuration."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import GatewayProcess, SpawnGateway

SECRET = "team-master-secret-0123456789abcdef"
RELAY_TOKEN = "pgr-team-relay-token-0123456789abcdef"
ADMIN_TOKEN = "pga-team-admin-token-0123456789abcdef"
# What management calls (list, show, update, delete) carry.
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CHAT_PATH = "/call-llm"


def team_env(monkeypatch: pytest.MonkeyPatch, *, secret: str = SECRET) -> None:
    """What every replica shares: the master secret, the relay token, the admin token."""
    monkeypatch.setenv("POWERMEM_GATEWAY_SECRET", secret)
    monkeypatch.setenv("POWERMEM_GATEWAY_RELAY_TOKEN", RELAY_TOKEN)
    monkeypatch.setenv("POWERMEM_GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)


async def start_replicas(
    spawn: SpawnGateway,
    n: int,
    *,
    upstream: str,
    database_url: str,
    root: Path,
    extra: tuple[str, ...] = (),
) -> list[GatewayProcess]:
    """`n` gateways, each with its own data dir (its own host, as far as it knows)."""
    replicas = [
        spawn(
            upstream=upstream,
            data_dir=root / f"replica-{i}",
            extra=("--database-url", database_url, *extra),
        )
        for i in range(n)
    ]
    for replica in replicas:
        await replica.wait_healthy()
    return replicas


def version_of(model: str) -> int:
    """`v-7` → 7; the first registration's model counts as version 0."""
    return int(model.rsplit("-", 1)[1]) if model.startswith("v-") else 0


@dataclass
class Stream:
    """Bound requests through some replicas, each checked against the last answered change.

    `acked` is the version of the last PUT that has answered (-1 once a DELETE has); a request
    sent after that must be served with it, or refused (404) after the delete."""

    session: aiohttp.ClientSession
    instance_id: str
    acked: int = 0
    deleting: bool = False  # set before the DELETE is sent
    deleted: bool = False  # set once it has answered
    served: int = 0
    refused: int = 0
    unavailable: int = 0
    stale: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def once(self, replica: GatewayProcess, relay: GatewayProcess | None = None) -> None:
        floor, deleted = self.acked, self.deleted
        headers = {"X-PowerMem-Instance": self.instance_id, "X-Relay-Token": RELAY_TOKEN}
        if relay is not None:
            headers["X-Relay-Host"] = f"127.0.0.1:{relay.port}"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        async with self.session.post(replica.url + CHAT_PATH, json=body, headers=headers) as r:
            text = await r.text()
            status, retry_after = r.status, r.headers.get("Retry-After")
        if status == 503:
            self.unavailable += 1
            if not retry_after:
                self.errors.append(f"503 without Retry-After: {text[:200]}")
            return
        if status == 404:
            self.refused += 1
            if not self.deleting:
                self.errors.append(f"404 before the delete: {text[:200]}")
            return
        if status != 200:
            self.errors.append(f"{status}: {text[:200]}")
            return
        answer = json.loads(text)
        if answer["relay_status"] != 200:
            if answer["relay_status"] == 503:
                self.unavailable += 1
                return
            if answer["relay_status"] == 404 and self.deleting:
                self.refused += 1  # deleted between the binding and the LLM call: refused too
                return
            self.errors.append(f"relay {answer['relay_status']}: {answer['relay_body'][:200]}")
            return
        model = json.loads(answer["relay_body"])["model"]
        if deleted:
            self.stale.append(f"served {model} after the delete had answered")
        elif version_of(model) < floor:
            self.stale.append(f"served {model} after v-{floor} had answered")
        self.served += 1

    async def run(
        self,
        replicas: Sequence[GatewayProcess],
        *,
        relays: Sequence[GatewayProcess] | None = None,
        seconds: float = 60.0,
        concurrency: int = 2,
    ) -> None:
        """Until `stop()` (or `seconds`): each worker cycles through the replicas."""
        deadline = time.monotonic() + seconds

        async def worker(offset: int) -> None:
            n = offset
            while not self._stop.is_set() and time.monotonic() < deadline:
                replica = replicas[n % len(replicas)]
                relay = relays[(n + 1) % len(relays)] if relays else None
                n += 1
                try:
                    await self.once(replica, relay)
                except aiohttp.ClientError as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))

    def stop(self) -> None:
        self._stop.set()


async def register(
    session: aiohttp.ClientSession, replica: GatewayProcess, body: dict[str, str]
) -> tuple[int, str]:
    async with session.post(replica.url + "/api/v1/instances", json=body) as response:
        payload = await response.json()
        return response.status, payload["data"]["instance_id"] if response.status < 300 else ""
