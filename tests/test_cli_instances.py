"""`powermem-gateway instances list|show|remove`: masked output, and removal that sticks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.settings import Settings
from tests.conftest import REPO_ROOT
from tests.fakes.upstream import Recorder

KEY = "sk-test-cli-0123456789abcdef"
OTHER_KEY = "sk-test-cli-other-fedcba9876543210"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instances_file=tmp_path / "instances.yaml")


def storage_args(settings: Settings) -> list[str]:
    return ["--data-dir", str(settings.data_dir), "--instances-file", str(settings.instances_file)]


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, ["instances", *args, *storage_args(settings)])


def register(settings: Settings, **fields: str) -> str:
    """Register one instance straight through the registry, as a running gateway would."""
    values = {"provider": "openai", "model": "gpt-4o-mini", "api_key": KEY} | fields

    async def go() -> str:
        registry = await Registry.open(settings)
        try:
            record, _ = await registry.resolve(InstanceConfig.parse(**values))
            registry.count(record.instance_id, requests=1)
            return record.instance_id
        finally:
            await registry.close()

    return asyncio.run(go())


def test_list_says_when_there_is_nothing(settings: Settings) -> None:
    """An empty registry lists as a plain sentence, exit 0."""
    result = run(settings, "list")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "No instances registered."


def test_list_shows_ids_and_masked_keys(settings: Settings) -> None:
    """Each instance is one line with id, client, provider, model and masked key."""
    a = register(settings, client="cursor")
    b = register(settings, provider="deepseek", model="deepseek-chat", api_key=OTHER_KEY)
    result = run(settings, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    line_a = next(line for line in lines if line.startswith(a))
    line_b = next(line for line in lines if line.startswith(b))
    assert "cursor" in line_a and "gpt-4o-mini" in line_a and "sk-t…cdef" in line_a
    assert "deepseek-chat" in line_b and "sk-t…3210" in line_b
    assert KEY not in result.output and OTHER_KEY not in result.output


def test_list_json_is_masked(settings: Settings) -> None:
    """`list --json` prints the public view of each instance."""
    instance_id = register(settings)
    result = run(settings, "list", "--json")
    rows = json.loads(result.output)
    assert [r["instance_id"] for r in rows] == [instance_id]
    assert rows[0]["api_key"] == "sk-t…cdef" and rows[0]["read_only"] is False
    assert KEY not in result.output


def test_list_marks_file_instances(settings: Settings) -> None:
    """Instances from instances.yaml are listed with where they come from."""
    settings.instances_file.write_text(
        f"instances:\n  pmem-mine:\n    provider: openai\n    model: gpt-4o\n    api_key: {KEY}\n"
    )
    result = run(settings, "list")
    assert "pmem-mine" in result.output and "(instances.yaml)" in result.output
    assert KEY not in result.output


def test_show_prints_masked_record_with_usage(settings: Settings) -> None:
    """`show` prints one masked instance with its times and usage counters."""
    instance_id = register(settings)
    result = run(settings, "show", instance_id)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["instance_id"] == instance_id and shown["api_key"] == "sk-t…cdef"
    assert shown["created_at"] and shown["updated_at"]
    assert shown["usage"]["requests"] == 1 and shown["usage"]["last_used_at"]
    assert KEY not in result.output


def test_show_unknown_id_is_a_clear_error(settings: Settings) -> None:
    """`show` of an unknown id exits 1 with a message naming it, not a traceback."""
    result = run(settings, "show", "pmem-0000000000000000")
    assert result.exit_code == 1
    assert "pmem-0000000000000000 is not registered" in result.output
    assert "Traceback" not in result.output


def test_remove_deletes_and_a_second_remove_fails(settings: Settings) -> None:
    """`remove` deletes the instance; removing it again exits 1."""
    keep = register(settings, model="keep-me")
    gone = register(settings)
    result = run(settings, "remove", gone)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Removed {gone}."
    listed = run(settings, "list").output
    assert gone not in listed and keep in listed
    again = run(settings, "remove", gone)
    assert again.exit_code == 1 and "not registered" in again.output


def test_remove_refuses_file_instances(settings: Settings) -> None:
    """A file instance cannot be removed from the CLI; the message points at the file."""
    settings.instances_file.write_text(
        "instances:\n  pmem-mine:\n    provider: ollama\n    model: llama3\n"
    )
    result = run(settings, "remove", "pmem-mine")
    assert result.exit_code == 1
    assert "instances.yaml" in result.output
    assert "pmem-mine" in run(settings, "list").output


def test_a_bad_instances_file_entry_is_reported_and_the_listing_goes_on(
    settings: Settings,
) -> None:
    """A broken entry is named on stderr; the listing of everything else still works."""
    settings.instances_file.write_text(
        "instances:\n  pmem-x:\n    provider: skynet\n    model: m\n"
        "  pmem-ok:\n    provider: ollama\n    model: llama3\n"
    )
    result = run(settings, "list")
    assert result.exit_code == 0
    assert "unknown provider" in result.stderr and "pmem-x" in result.stderr
    assert "pmem-ok" in result.stdout and "pmem-x" not in result.stdout
    assert "Traceback" not in result.output


def test_data_dir_comes_from_the_environment(settings: Settings) -> None:
    """POWERMEM_GATEWAY_DATA_DIR points the commands at the registry, like --data-dir."""
    instance_id = register(settings)
    result = CliRunner().invoke(
        cli,
        ["instances", "list"],
        env={
            "POWERMEM_GATEWAY_DATA_DIR": str(settings.data_dir),
            "POWERMEM_GATEWAY_INSTANCES_FILE": str(settings.instances_file),
        },
    )
    assert instance_id in result.output


def test_installed_command_lists_instances(settings: Settings) -> None:
    """`python -m gateway instances list --json` works as a real process."""
    instance_id = register(settings)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "instances", "list", "--json", *storage_args(settings)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [r["instance_id"] for r in json.loads(done.stdout)] == [instance_id]
    assert KEY not in done.stdout + done.stderr


async def test_removal_takes_effect_on_a_running_gateway(
    gateway: TestClient[web.Request, web.Application], recorder: Recorder, tmp_path: Path
) -> None:
    """An instance removed with the CLI is refused by a running gateway at once."""
    response = await gateway.post(
        "/api/v1/instances", json={"provider": "openai", "model": "gpt-4o", "api_key": KEY}
    )
    instance_id = (await response.json())["data"]["instance_id"]
    bound = {"X-PowerMem-Instance": instance_id}
    assert (await gateway.get("/api/v1/memories", headers=bound)).status == 200
    args = ["--data-dir", str(tmp_path / "data"), "--instances-file", str(tmp_path / "x.yaml")]
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["instances", "remove", instance_id, *args]
    )
    assert result.exit_code == 0, result.output
    forwarded = len(recorder.requests)
    refused = await gateway.get("/api/v1/memories", headers=bound)
    assert refused.status == 404
    assert len(recorder.requests) == forwarded
