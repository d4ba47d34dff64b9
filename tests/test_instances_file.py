"""Human-managed instances in instances.yaml: read at start, re-read on change, read-only."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.instances.yamlfile import (
    InstancesFileError,
    load_instances_file,
    read_instances_file,
)
from gateway.settings import Settings
from tests.binding import instance_of
from tests.conftest import OperatorFactory

ENV_KEY = "sk-ant-from-env-0123456789abcdef"
FILE_KEY = "sk-file-0123456789abcdef"

GOOD = """
instances:
  pmem-claude:
    client: claude-code
    provider: anthropic
    model: claude-sonnet-4-6
    api_key_env: TEST_ANTHROPIC_KEY
  pmem-cursor:
    client: cursor
    provider: openai
    model: gpt-4o
    api_key: {key}
"""


def write(path: Path, text: str) -> None:
    """Replace the file and make sure its change stamp moves even within one clock tick."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(old + 10**9, old + 10**9))


def open_files() -> list[str]:
    """What this process holds open (Linux), skipping descriptors that close meanwhile."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
    return held


@pytest.fixture
def instances_file(make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", ENV_KEY)
    path: Path = make_settings().instances_file
    write(path, GOOD.format(key=FILE_KEY))
    return path


def test_absent_or_empty_file_means_no_instances(tmp_path: Path) -> None:
    """No file, or an empty one, is simply no instances."""
    assert load_instances_file(tmp_path / "missing.yaml") == {}
    (tmp_path / "empty.yaml").write_text("")
    assert load_instances_file(tmp_path / "empty.yaml") == {}


def test_api_key_env_reads_the_key_from_the_environment(tmp_path: Path) -> None:
    """`api_key_env: NAME` takes the key from the gateway's environment."""
    path = tmp_path / "instances.yaml"
    path.write_text(GOOD.format(key=FILE_KEY))
    entries = load_instances_file(path, {"TEST_ANTHROPIC_KEY": ENV_KEY})
    assert entries["pmem-claude"].config.api_key == ENV_KEY
    assert entries["pmem-cursor"].config.api_key == FILE_KEY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("instances: [1, 2]", "must hold a mapping"),
        ("- just\n- a list", "must hold a mapping"),
        ("instances:\n  pmem-x: [oops]", "must be a mapping"),
        ("instances:\n  'bad id!':\n    provider: openai", "is not valid"),
        ("instances:\n  pmem-x:\n    provider: openai\n    model: m\n    colour: red", "colour"),
        (
            "instances:\n  pmem-x:\n    provider: openai\n    model: m\n"
            "    api_key: k\n    api_key_env: K",
            "both api_key and api_key_env",
        ),
        (
            "instances:\n  pmem-x:\n    provider: openai\n    model: m\n    api_key_env: NOT_SET_X",
            "NOT_SET_X",
        ),
        ("instances:\n  pmem-x:\n    provider: skynet\n    model: m", "unknown provider"),
        ("instances:\n  pmem-x:\n    provider: openai\n    api_key: k", "model is required"),
    ],
)
def test_bad_file_names_what_is_wrong(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of mistake raises `InstancesFileError` with a message that says what and where."""
    path = tmp_path / "instances.yaml"
    path.write_text(text)
    with pytest.raises(InstancesFileError, match=expected):
        load_instances_file(path, {})


def test_yaml_syntax_error_gives_the_line_but_not_the_text(tmp_path: Path) -> None:
    """A YAML syntax error names the line and never quotes the file (it may hold a key)."""
    path = tmp_path / "instances.yaml"
    path.write_text(f"instances:\n  pmem-x:\n    api_key: {FILE_KEY}\n   : [unclosed\n")
    with pytest.raises(InstancesFileError) as caught:
        load_instances_file(path, {})
    assert "line" in caught.value.message
    assert FILE_KEY not in caught.value.message


async def test_registry_serves_file_instances_read_only(
    instances_file: Path, registry: Registry
) -> None:
    """File instances are listed and found by id, marked read-only, with keys masked."""
    listed = {r.instance_id: r for r in await registry.list()}
    assert set(listed) == {"pmem-claude", "pmem-cursor"}
    claude = await registry.get("pmem-claude")
    assert claude.public()["read_only"] is True and claude.source == "yaml"
    assert claude.masked_key == "sk-a…cdef"
    assert registry.api_key(claude) == ENV_KEY


async def test_file_config_resolves_to_the_file_id(
    instances_file: Path, registry: Registry
) -> None:
    """LLM headers matching a file instance bind to that instance instead of creating one."""
    config = InstanceConfig.parse(
        provider="openai", model="gpt-4o", api_key=FILE_KEY, client="cursor"
    )
    record, created = await registry.resolve(config)
    assert (record.instance_id, created) == ("pmem-cursor", False)
    assert len(await registry.list()) == 2


async def test_file_wins_over_sqlite_on_id_clash(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the file names an id SQLite also holds, the file's instance is the one served."""
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", ENV_KEY)
    settings = make_settings()
    registry = await Registry.open(settings)
    stored, _ = await registry.resolve(
        InstanceConfig.parse(provider="deepseek", model="deepseek-chat", api_key="sk-sqlite-0001")
    )
    await registry.close()
    write(
        settings.instances_file,
        f"instances:\n  {stored.instance_id}:\n    provider: anthropic\n"
        "    model: claude-sonnet-4-6\n    api_key_env: TEST_ANTHROPIC_KEY\n",
    )
    registry = await Registry.open(settings)
    try:
        served = await registry.get(stored.instance_id)
        assert (served.provider, served.source) == ("anthropic", "yaml")
        assert registry.api_key(served) == ENV_KEY
        listed = await registry.list()
        assert [(r.instance_id, r.source) for r in listed] == [(stored.instance_id, "yaml")]
    finally:
        await registry.close()


async def test_file_change_is_picked_up_on_reload(instances_file: Path, registry: Registry) -> None:
    """An edit to the file shows after `reload_instances_file`; an unchanged file is not re-read."""
    assert registry.reload_instances_file() is False
    write(instances_file, GOOD.format(key=FILE_KEY).replace("gpt-4o", "gpt-4.1"))
    assert registry.reload_instances_file() is True
    assert (await registry.get("pmem-cursor")).model == "gpt-4.1"
    write(instances_file, "instances: {}\n")
    assert registry.reload_instances_file() is True
    assert await registry.list() == []


async def test_removed_file_removes_its_instances(instances_file: Path, registry: Registry) -> None:
    """Deleting the file drops its instances on the next reload."""
    instances_file.unlink()
    assert registry.reload_instances_file() is True
    assert await registry.list() == []


async def test_bad_edit_keeps_the_previous_version_of_that_entry(
    instances_file: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry broken by an edit keeps its last good version; the rest follows the file."""
    write(instances_file, "instances:\n  pmem-claude:\n    provider: skynet\n")
    assert registry.reload_instances_file() is True  # pmem-cursor left the file
    assert {r.instance_id for r in await registry.list()} == {"pmem-claude"}
    assert (await registry.get("pmem-claude")).provider == "anthropic"
    assert "previous one kept" in caplog.text
    (problem,) = registry.file_problems
    assert "pmem-claude" in problem and "model is required" in problem
    write(instances_file, GOOD.format(key=FILE_KEY).replace("gpt-4o", "gpt-4.1"))
    assert registry.reload_instances_file() is True
    assert (await registry.get("pmem-cursor")).model == "gpt-4.1"
    assert registry.file_problems == []


async def test_a_bad_entry_at_start_is_skipped_and_the_others_serve(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """An entry whose api_key_env is unset is reported and skipped; valid entries are served."""
    settings = make_settings()
    write(
        settings.instances_file,
        GOOD.format(key=FILE_KEY)
        + "  pmem-broken:\n    provider: openai\n    model: m\n    api_key_env: UNSET_KEY_VAR\n",
    )
    registry = await Registry.open(settings)  # TEST_ANTHROPIC_KEY is unset here too
    try:
        listed = {r.instance_id for r in await registry.list()}
        assert listed == {"pmem-cursor"}
        assert registry.api_key(await registry.get("pmem-cursor")) == FILE_KEY
        problems = registry.file_problems
        assert len(problems) == 2
        assert any("UNSET_KEY_VAR" in p and "pmem-broken" in p for p in problems)
        assert any("TEST_ANTHROPIC_KEY" in p and "pmem-claude" in p for p in problems)
        assert all("skipped" in p for p in problems)
        assert "UNSET_KEY_VAR" in caplog.text
    finally:
        await registry.close()


@pytest.mark.parametrize(
    "mistake",
    ["sk-proj-abcdefghijklmnop0123456789", "0123456789abcdef0123456789abcdef", "AIzaSyA0123456789"],
)
async def test_a_key_given_as_api_key_env_is_never_printed(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, mistake: str
) -> None:
    """A key pasted where a variable name belongs shows up in no message, log or problem."""
    settings = make_settings()
    write(
        settings.instances_file,
        f"instances:\n  pmem-x:\n    provider: openai\n    model: m\n    api_key_env: {mistake}\n",
    )
    registry = await Registry.open(settings)
    try:
        assert await registry.list() == []
        (problem,) = registry.file_problems
        assert "api_key_env" in problem
        assert mistake not in problem
    finally:
        await registry.close()
    assert mistake not in caplog.text
    with pytest.raises(InstancesFileError) as caught:
        load_instances_file(settings.instances_file, {})
    assert mistake not in caught.value.message


async def test_an_unreadable_file_at_start_is_reported_and_nothing_stops(
    make_settings: Callable[..., Settings],
) -> None:
    """A file that is not YAML at all: the registry opens, serves SQLite, and says why."""
    settings = make_settings()
    write(settings.instances_file, "instances:\n  pmem-x: {provider: openai\n")
    registry = await Registry.open(settings)
    try:
        record, created = await registry.resolve(
            InstanceConfig.parse(provider="openai", model="gpt-4o", api_key=FILE_KEY)
        )
        assert created and (await registry.get(record.instance_id)).model == "gpt-4o"
        (problem,) = registry.file_problems
        assert "not valid YAML" in problem
    finally:
        await registry.close()
    if Path("/proc/self/fd").is_dir():  # closing keeps no database file open
        assert not [f for f in open_files() if f.startswith(str(settings.data_dir))]


async def test_strict_types_and_unknown_fields_are_refused_per_entry(tmp_path: Path) -> None:
    """A number where text belongs, or a misspelt field, is a problem of that entry only."""
    path = tmp_path / "instances.yaml"
    path.write_text(
        "instances:\n"
        "  pmem-num:\n    provider: openai\n    model: 4\n    api_key: k\n"
        "  pmem-typo:\n    provider: openai\n    model: m\n    api_kee: k\n"
        "  pmem-good:\n    provider: ollama\n    model: llama3\n"
    )
    good, bad = read_instances_file(path, {})
    assert set(good) == {"pmem-good"}
    assert "model" in bad["pmem-num"] and "string" in bad["pmem-num"]
    assert "unknown field api_kee" in bad["pmem-typo"]


async def test_api_refuses_to_change_file_instances(
    instances_file: Path,
    operator: OperatorFactory,
    make_settings: Callable[..., Settings],
) -> None:
    """PUT and DELETE on a file instance answer 409 and point at the file."""
    client: TestClient[web.Request, web.Application] = await operator(create_app(make_settings()))
    put = await client.put("/api/v1/instances/pmem-cursor", json={"model": "gpt-4.1"})
    delete = await client.delete("/api/v1/instances/pmem-cursor")
    for response in (put, delete):
        body = await response.json()
        assert response.status == 409
        assert body["error"]["code"] == "INSTANCE_READ_ONLY"
        assert "instances.yaml" in body["error"]["message"]
    assert (await client.server.app[REGISTRY].get("pmem-cursor")).model == "gpt-4o"
    shown = await (await client.get("/api/v1/instances/pmem-cursor")).json()
    assert shown["data"]["read_only"] is True
    assert shown["data"]["api_key"] == "sk-f…cdef"


async def test_proxy_binds_a_file_instance_by_id(
    instances_file: Path, gateway: TestClient[web.Request, web.Application], recorder: Any
) -> None:
    """A request naming a file instance is forwarded with that instance's baggage."""
    response = await gateway.get("/api/v1/memories", headers={"X-PowerMem-Instance": "pmem-claude"})
    assert response.status == 200
    assert response.headers["X-PowerMem-Instance"] == "pmem-claude"
    assert instance_of(recorder.last.headers["baggage"]) == "pmem-claude"


async def test_running_gateway_picks_up_an_edit(
    instances_file: Path, gateway: TestClient[web.Request, web.Application], recorder: Any
) -> None:
    """A new instance written to the file is served by a running gateway within seconds."""
    headers = {"X-PowerMem-Instance": "pmem-added"}
    assert (await gateway.get("/api/v1/memories", headers=headers)).status == 404
    write(
        instances_file,
        GOOD.format(key=FILE_KEY) + "  pmem-added:\n    provider: ollama\n    model: llama3\n",
    )
    for _ in range(50):
        response = await gateway.get("/api/v1/memories", headers=headers)
        if response.status == 200:
            break
        await asyncio.sleep(0.1)
    assert response.status == 200
    assert instance_of(recorder.last.headers["baggage"]) == "pmem-added"
