"""`register` turns the knob each tool really reads, against a running gateway; `unregister`
puts every file back as it was. The tool's own view of its file is what is checked: a shell
sourcing runtime.env, tomllib reading Codex's config, json reading Cursor's and OpenCode's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.model import InstanceConfig
from gateway.settings import Settings
from tests.binding import instance_of
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN
from tests.fakes.upstream import Recorder
from tests.test_knob_files import CODEX_WITH_POWERMEM, CURSOR, OPENCODE, RUNTIME_ENV

KEY = "sk-ant-knob-key-0123456789abcdef"
FLAGS = ["--provider", "anthropic", "--model", "claude-test", "--api-key-env", "TEST_KEY"]
KNOB_FILES = {
    "claude-code": ".powermem/runtime.env",
    "codex": ".codex/config.toml",
    "opencode": ".config/opencode/opencode.json",
    "cursor": ".cursor/mcp.json",
}
BEFORE = {
    "claude-code": RUNTIME_ENV,
    "codex": CODEX_WITH_POWERMEM,
    "opencode": OPENCODE,
    "cursor": CURSOR,
}

Invoke = Callable[..., Any]


@pytest.fixture
async def server(gateway_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    started: TestServer = await gateway_server(create_app(make_settings()))
    return started


@pytest.fixture
def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def invoker(url: str) -> Invoke:
    async def run(*args: str, **env: str) -> Result:
        argv = [*args, "--gateway", url]
        # The CLI on the gateway's machine knows its admin token (here: the tests' one).
        env = {"TEST_KEY": KEY, "POWERMEM_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **env}
        return await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)

    return run


@pytest.fixture
def invoke(url: str) -> Invoke:
    return invoker(url)


def register_args(client: str) -> list[str]:
    return ["register", "--client", client, *FLAGS] + (["--global"] if client == "cursor" else [])


def knob_value(client: str, home: Path) -> str:
    """The URL the tool itself would read from its file."""
    path = home / KNOB_FILES[client]
    if client == "claude-code":
        script = f'set -a; . "{path}"; printf %s "$POWERMEM_BASE_URL"'
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
        return done.stdout
    if client == "codex":
        return str(tomllib.loads(path.read_text())["mcp_servers"]["powermem"]["url"])
    data = json.loads(path.read_text())
    return str(
        data["mcp"]["powermem"]["url"]
        if client == "opencode"
        else (data["mcpServers"]["powermem"]["url"])
    )


async def instance_ids(url: str) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/instances", headers=ADMIN_AUTH) as response,
    ):
        body = await response.json()
    return [i["instance_id"] for i in body["data"]["instances"]]


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("client", sorted(KNOB_FILES))
async def test_each_tool_reads_a_scoped_url_that_binds_its_own_instance(
    client: str, invoke: Invoke, url: str, clean_env: Path, recorder: Recorder
) -> None:
    """The tool, knowing only the URL in its file, reaches powermem bound to its instance."""
    result = await invoke(*register_args(client))
    assert result.exit_code == 0, result.output
    [iid] = await instance_ids(url)
    value = knob_value(client, clean_env)
    base = f"{url}/i/{iid}"
    assert value == (base if client == "claude-code" else base + "/mcp")
    assert os.stat(clean_env / KNOB_FILES[client]).st_mode & 0o777 == 0o600
    status, _ = await get(base + "/api/v1/memories?user_id=u1")
    assert status == 200
    assert instance_of(recorder.last.headers["baggage"]) == iid
    assert "X-PowerMem-Instance" not in recorder.last.headers


@pytest.mark.parametrize("client", sorted(KNOB_FILES))
async def test_register_twice_changes_no_file_and_unregister_restores_every_byte(
    client: str, invoke: Invoke, url: str, clean_env: Path
) -> None:
    """The tool's file, with its comments and other entries, is exactly as before afterwards."""
    path = clean_env / KNOB_FILES[client]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BEFORE[client], encoding="utf-8")
    first = await invoke(*register_args(client))
    assert first.exit_code == 0, first.output
    written = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    second = await invoke(*register_args(client))
    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.output and "already points at" in second.output
    assert path.read_bytes() == written and path.stat().st_mtime_ns == stamp
    records = clean_env / ".powermem" / "gateway-knobs.json"
    assert records.stat().st_mode & 0o777 == 0o600

    done = await invoke("unregister", "--client", client, *(["--global"] * (client == "cursor")))
    assert done.exit_code == 0, done.output
    assert path.read_text(encoding="utf-8") == BEFORE[client]
    assert await instance_ids(url) == []
    assert json.loads(records.read_text()) == {}
    if client in ("claude-code", "codex", "opencode"):
        assert not any((clean_env / ".powermem").glob("instance.id"))


async def test_unregister_leaves_a_knob_the_user_changed_since(
    invoke: Invoke, url: str, clean_env: Path
) -> None:
    """A knob that no longer names the instance is not register's to undo any more."""
    await invoke(*register_args("claude-code"))
    runtime = clean_env / KNOB_FILES["claude-code"]
    runtime.write_text("POWERMEM_BASE_URL=http://elsewhere:8848\n")
    done = await invoke("unregister", "--client", "claude-code")
    assert done.exit_code == 0, done.output
    assert runtime.read_text() == "POWERMEM_BASE_URL=http://elsewhere:8848\n"
    assert "left as it is" in done.output


async def test_a_symlinked_knob_is_refused_before_anything_is_registered(
    invoke: Invoke, url: str, clean_env: Path, tmp_path: Path
) -> None:
    """`~/.codex/config.toml -> elsewhere`: exit 1, the target untouched, no instance made."""
    target = tmp_path / "precious.toml"
    target.write_text('keep = "me"\n')
    link = clean_env / KNOB_FILES["codex"]
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    result = await invoke(*register_args("codex"))
    assert result.exit_code == 1
    assert "symbolic link" in result.output and str(link) in result.output
    assert target.read_text() == 'keep = "me"\n'
    assert await instance_ids(url) == []
    assert not (clean_env / ".codex" / "powermem-instance.id").exists()


async def test_a_knob_owned_by_another_user_is_refused(
    invoke: Invoke, url: str, clean_env: Path
) -> None:
    """A project file planted by someone else is not taken over; nothing is registered."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    path = clean_env / KNOB_FILES["opencode"]
    path.parent.mkdir(parents=True)
    path.write_text(OPENCODE)
    os.chown(path, 65534, 65534)
    result = await invoke(*register_args("opencode"))
    assert result.exit_code == 1 and "belongs to user id 65534" in result.output
    assert path.read_text() == OPENCODE and await instance_ids(url) == []


async def test_claude_code_is_warned_when_its_environment_overrides_runtime_env(
    invoke: Invoke, clean_env: Path
) -> None:
    """The launcher prefers POWERMEM_BASE_URL from Claude Code's env block: register says so."""
    settings = clean_env / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"env": {"POWERMEM_BASE_URL": "http://localhost:8848"}}))
    result = await invoke(*register_args("claude-code"))
    assert result.exit_code == 0, result.output
    assert "POWERMEM_BASE_URL=http://localhost:8848 is also set in the env block" in result.output


async def test_knob_locations_follow_the_tools_own_variables(
    invoke: Invoke, clean_env: Path, tmp_path: Path
) -> None:
    """POWERMEM_DATA_DIR moves runtime.env, CODEX_HOME moves config.toml."""
    data_dir, codex_home = tmp_path / "pm-data", tmp_path / "codex-home"
    result = await invoke(*register_args("claude-code"), POWERMEM_DATA_DIR=str(data_dir))
    assert result.exit_code == 0, result.output
    assert (data_dir / "runtime.env").read_text().startswith("POWERMEM_BASE_URL=http://")
    result = await invoke(*register_args("codex"), CODEX_HOME=str(codex_home))
    assert result.exit_code == 0, result.output
    assert "mcp_servers" in tomllib.loads((codex_home / "config.toml").read_text())
    assert not (clean_env / ".powermem" / "runtime.env").exists()


# -- shared gateways: the instance secret lives in the tool's file only ------------------------


@pytest.fixture
async def shared(gateway_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    started: TestServer = await gateway_server(create_app(make_settings(shared=True)))
    return started


async def test_a_shared_gateway_keeps_the_saved_secret_and_never_prints_it(
    shared: TestServer, clean_env: Path, recorder: Recorder
) -> None:
    """Re-registering keeps the secret from the knob's URL; output masks it; the URL binds."""
    url = str(shared.make_url("")).rstrip("/")
    config = InstanceConfig.parse(
        client="cursor", provider="anthropic", model="claude-test", api_key=KEY
    )
    first = await shared.app[REGISTRY].register(config)
    assert first.secret is not None  # what the first registration answered, once
    iid = first.record.instance_id
    scoped = f"{url}/i/{iid}~{first.secret}/mcp"
    path = clean_env / KNOB_FILES["cursor"]
    path.parent.mkdir()
    path.write_text(json.dumps({"mcpServers": {"powermem": {"url": scoped}}}))
    result = await invoker(url)(*register_args("cursor"))
    assert result.exit_code == 0, result.output
    assert first.secret not in result.output
    assert f"{url}/i/{iid}~…/mcp" in result.output
    assert knob_value("cursor", clean_env) == scoped
    status, _ = await get(scoped.removesuffix("/mcp") + "/api/v1/memories?user_id=u")
    assert status == 200 and instance_of(recorder.last.headers["baggage"]) == iid
    status, body = await get(f"{url}/i/{iid}/api/v1/memories?user_id=u")
    assert status == 401 and body["error"]["code"] == "INSTANCE_SECRET_REQUIRED"


async def test_a_shared_gateway_issues_a_secret_that_only_the_tools_own_file_keeps(
    shared: TestServer, clean_env: Path
) -> None:
    """Registration on a shared gateway answers a secret once: it lands in the tool's file
    (0600, inside the scoped URL), and the CLI shows it masked."""
    url = str(shared.make_url("")).rstrip("/")
    result = await invoker(url)(*register_args("opencode"))
    assert result.exit_code == 0, result.output
    knob = knob_value("opencode", clean_env)
    secret = knob.split("~", 1)[1].split("/", 1)[0]
    assert secret.startswith("pmis-") and secret not in result.output
    assert (clean_env / KNOB_FILES["opencode"]).stat().st_mode & 0o777 == 0o600
