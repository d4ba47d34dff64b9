"""The audit trail: one JSON line per registry change and failed admin login, never a key."""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from gateway.cli import cli
from gateway.http.app import create_app
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.observe.audit import AUDIT_FILE, AuditLog
from gateway.settings import Settings
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]
ADMIN = "admin-token-audit-0123456789"
KEY = "sk-test-audit-0123456789abcdef"
NEW_KEY = "sk-test-audit-new-fedcba9876543210"
IMPLICIT_KEY = "sk-test-audit-implicit-aaaabbbbcccc"
FIELDS = {"ts", "action", "instance_id", "client", "source"}


def entries(data_dir: Path) -> list[dict[str, Any]]:
    lines = (data_dir / AUDIT_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


async def test_every_change_is_logged_once_with_who_and_from_where(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """Create, implicit create, update, delete, rotate and a failed admin call: one line each."""
    settings = make_settings(admin_token=ADMIN)
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"client": "cursor", "provider": "openai", "model": "gpt-4o", "api_key": KEY}
    created = await (await client.post("/api/v1/instances", json=body)).json()
    instance_id = created["data"]["instance_id"]
    await client.post("/api/v1/instances", json=body)  # already registered: not a change
    response = await client.get(
        "/api/v1/memories",
        headers={
            "X-PowerMem-Client": "codex",
            "X-PowerMem-LLM-Provider": "deepseek",
            "X-PowerMem-LLM-Model": "deepseek-chat",
            "X-PowerMem-LLM-Api-Key": IMPLICIT_KEY,
        },
    )
    implicit_id = response.headers["X-PowerMem-Instance"]
    response = await client.put(
        f"/api/v1/instances/{instance_id}",
        json={"api_key": NEW_KEY, "model": "gpt-4.1", "client": "cursor"},
        headers=admin,
    )
    assert response.status == 200
    response = await client.delete(
        f"/api/v1/instances/{instance_id}", headers={"Authorization": "Bearer wrong"}
    )
    assert response.status == 401
    assert (await client.delete(f"/api/v1/instances/{instance_id}", headers=admin)).status == 200
    registry = await Registry.open(settings)
    try:
        await registry.rotate_master_key(source="cli")
    finally:
        await registry.close()

    log = entries(settings.data_dir)
    assert [e["action"] for e in log] == [
        "create",
        "implicit_create",
        "update",
        "admin_auth_failed",
        "delete",
        "rotate",
    ]
    assert all(set(e) >= FIELDS and e["ts"].endswith("Z") for e in log)
    create, implicit, update, failed, delete, rotate = log
    assert (create["instance_id"], create["client"], create["source"]) == (
        instance_id,
        "cursor",
        "127.0.0.1",
    )
    assert (implicit["instance_id"], implicit["client"]) == (implicit_id, "codex")
    assert implicit["source"] == "127.0.0.1"
    assert (update["instance_id"], update["fields"]) == (instance_id, ["api_key", "model"])
    assert (failed["instance_id"], failed["source"]) == (instance_id, "127.0.0.1")
    assert (delete["instance_id"], delete["client"]) == (instance_id, "cursor")
    assert rotate["source"] == "cli" and rotate["instance_id"] is None
    assert rotate["reencrypted"] == 1 and rotate["key_id"] not in rotate["previous_key_ids"]


async def test_audit_log_is_private_and_holds_no_secret(
    aiohttp_client: Any, make_settings: Callable[..., Settings]
) -> None:
    """The file is 0600 and contains neither API keys nor the admin token."""
    settings = make_settings(admin_token=ADMIN)
    client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))
    body = {"provider": "openai", "model": "gpt-4o", "api_key": KEY}
    instance_id = (await (await client.post("/api/v1/instances", json=body)).json())["data"][
        "instance_id"
    ]
    await client.put(
        f"/api/v1/instances/{instance_id}",
        json={"api_key": NEW_KEY},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    await client.get("/api/v1/instances", headers={"Authorization": f"Bearer {KEY}"})
    path = settings.data_dir / AUDIT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    for secret in (KEY, NEW_KEY, ADMIN, KEY[:12], NEW_KEY[-8:]):
        assert secret not in text
    assert [e["action"] for e in entries(settings.data_dir)] == [
        "create",
        "update",
        "admin_auth_failed",
    ]


def test_cli_remove_is_logged_with_source_cli(tmp_path: Path) -> None:
    """`powermem-gateway instances remove` appends a delete entry from `cli`."""
    settings = Settings(data_dir=tmp_path / "data", instances_file=tmp_path / "instances.yaml")

    async def register() -> str:
        registry = await Registry.open(settings)
        try:
            record, _ = await registry.resolve(
                InstanceConfig.parse(provider="openai", model="m", api_key=KEY, client="zed")
            )
            return record.instance_id
        finally:
            await registry.close()

    instance_id = asyncio.run(register())
    args = ["--data-dir", str(settings.data_dir), "--instances-file", str(settings.instances_file)]
    result = CliRunner().invoke(cli, ["instances", "remove", instance_id, *args])
    assert result.exit_code == 0, result.output
    last = entries(settings.data_dir)[-1]
    assert (last["action"], last["instance_id"], last["client"], last["source"]) == (
        "delete",
        instance_id,
        "zed",
        "cli",
    )


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    """Two logs on one file (as two processes would have), written from many threads."""
    logs = [AuditLog(tmp_path), AuditLog(tmp_path)]

    def write(log: AuditLog, n: int) -> None:
        for i in range(300):
            log.record("update", instance_id=f"pmem-{n:04d}{i:012d}", fields=["model"] * 20)

    threads = [threading.Thread(target=write, args=(logs[n % 2], n)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    assert len(entries(tmp_path)) == 1800
