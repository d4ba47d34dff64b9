"""Every CLI command that reads the registry works against a PostgreSQL one (issue 13)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.cluster import SECRET

KEY = "sk-test-cli-database-0123456789abcdef"


def _run(database_url: str, data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli, [*args, "--database-url", database_url, "--data-dir", str(data_dir)]
    )


def test_list_show_and_remove_read_the_shared_registry(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance registered by one replica is listed, shown (with the usage every replica
    counted) and removed by the CLI on another host, which keeps no data of its own."""
    monkeypatch.setenv("POWERMEM_GATEWAY_SECRET", SECRET)
    settings = Settings(
        data_dir=tmp_path / "replica", instances_file=tmp_path / "i.yaml", database_url=database_url
    )

    async def register() -> str:
        registry = await Registry.open(settings)
        try:
            config = InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=KEY)
            record, _ = await registry.resolve(config)
            registry.count(record.instance_id, requests=3)
            return record.instance_id
        finally:
            await registry.close()

    instance_id = asyncio.run(register())
    cli_dir = tmp_path / "cli-host"
    listed = _run(database_url, cli_dir, "instances", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["instance_id"] for row in json.loads(listed.output)] == [instance_id]
    assert KEY not in listed.output
    shown = _run(database_url, cli_dir, "instances", "show", instance_id)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["usage"]["requests"] == 3
    removed = _run(database_url, cli_dir, "instances", "remove", instance_id)
    assert removed.exit_code == 0, removed.output
    gone = _run(database_url, cli_dir, "instances", "show", instance_id)
    assert gone.exit_code == 1 and "not registered" in gone.output
    assert not (cli_dir / "master.key").exists()


def test_a_cli_without_the_shared_secret_says_what_to_set(
    database_url: str, tmp_path: Path
) -> None:
    """No POWERMEM_GATEWAY_SECRET with --database-url: one line naming the variable."""
    result = _run(database_url, tmp_path / "cli", "instances", "list")
    assert result.exit_code == 1
    assert "POWERMEM_GATEWAY_SECRET" in result.output and result.output.count("\n") == 1
