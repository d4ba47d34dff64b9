"""`register` / `unregister` against a running gateway: ids land where each tool looks, and
each tool's own knob gets its instance-scoped URL (see test_client_knobs.py for the files)."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.http.app import create_app
from gateway.settings import Settings, default_data_dir
from gateway.tokens import read_admin_token
from tests.binding import instance_of
from tests.fakes.upstream import Recorder

KEY = "sk-ant-first-key-0123456789abcdef"
NEW_KEY = "sk-ant-second-key-fedcba9876543210"
ADMIN = "admin-token-for-tests"
ID_FILES = {
    "claude-code": ".powermem/instance.id",
    "codex": ".codex/powermem-instance.id",
    "opencode": ".config/opencode/powermem-instance.id",
}

Invoke = Callable[..., Any]


@pytest.fixture
async def server(gateway_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    """A gateway as `serve` starts it by default: no admin token configured, so it makes one
    in its data dir (~/.powermem/gateway), where the CLI on the same machine finds it."""
    settings = make_settings(admin_token=None, data_dir=default_data_dir())
    started: TestServer = await gateway_server(create_app(settings))
    return started


@pytest.fixture
def gateway_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def invoke(gateway_url: str) -> Invoke:
    """Run the CLI in a thread (it has its own event loop) against the in-process gateway."""

    async def run(*args: str, input: str | None = None, **env: str) -> Result:
        runner = CliRunner()
        argv = [*args, "--gateway", gateway_url]
        return await asyncio.to_thread(runner.invoke, cli, argv, input=input, env=env)

    return run


async def instances(url: str, token: str | None = None) -> list[dict[str, Any]]:
    """The gateway's list, read with `token`, else with the admin token of ~/.powermem/gateway."""
    token = token or read_admin_token(Settings())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/instances", headers=headers) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    found: list[dict[str, Any]] = body["data"]["instances"]
    return found


def flags(key_var: str = "TEST_KEY") -> list[str]:
    return ["--provider", "anthropic", "--model", "claude-test", "--api-key-env", key_var]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("client", sorted(ID_FILES))
async def test_each_tool_gets_its_id_file_with_mode_0600(
    client: str, invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """The id lands in that tool's own file, alone on one line, readable by the user only."""
    result = await invoke("register", "--client", client, *flags(), TEST_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    path = clean_env / ID_FILES[client]
    assert path.read_text() == instance["instance_id"] + "\n"
    assert mode(path) == 0o600
    assert instance["client"] == client
    assert KEY not in result.output
    assert not list(path.parent.glob(".*.tmp"))


async def test_claude_code_registers_from_its_settings_alone(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """Model, base URL and key come from the env block of ~/.claude/settings.json."""
    settings = clean_env / ".claude" / "settings.json"
    settings.parent.mkdir()
    env = {
        "ANTHROPIC_MODEL": "claude-from-settings",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/anthropic",
        "ANTHROPIC_AUTH_TOKEN": KEY,
    }
    settings.write_text(json.dumps({"env": env, "model": "opus"}))
    result = await invoke("register", "--client", "claude-code")
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    assert (instance["provider"], instance["model"]) == ("anthropic", "claude-from-settings")
    assert instance["base_url"] == "http://127.0.0.1:9/anthropic"
    assert instance["api_key"] == "sk-a…cdef"
    assert "ANTHROPIC_AUTH_TOKEN (~/.claude/settings.json env)" in result.output
    assert KEY not in result.output


async def test_codex_registers_from_config_toml_and_its_env_key(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """Codex's model, provider table and the variable its env_key names are used."""
    config = clean_env / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        'model = "deepseek-chat"\nmodel_provider = "deepseek"\n\n'
        '[model_providers.deepseek]\nname = "DeepSeek"\n'
        'base_url = "http://127.0.0.1:9/v1"\nenv_key = "DEEPSEEK_API_KEY"\n'
    )
    result = await invoke("register", "--client", "codex", DEEPSEEK_API_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    assert (instance["provider"], instance["model"]) == ("deepseek", "deepseek-chat")
    assert instance["base_url"] == "http://127.0.0.1:9/v1"


async def test_opencode_registers_from_its_model_and_env_reference(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """OpenCode's "provider/model" and an `{env:NAME}` key reference are followed."""
    config = clean_env / ".config" / "opencode" / "opencode.json"
    config.parent.mkdir(parents=True)
    options = {"apiKey": "{env:MY_OPENAI_KEY}"}
    config.write_text(
        json.dumps({"model": "openai/gpt-test", "provider": {"openai": {"options": options}}})
    )
    result = await invoke("register", "--client", "opencode", MY_OPENAI_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    assert (instance["provider"], instance["model"]) == ("openai", "gpt-test")


async def test_missing_settings_name_the_flag_and_the_variable(invoke: Invoke) -> None:
    """With nothing configured, the error says which flag or variable would supply it."""
    result = await invoke("register", "--client", "claude-code")
    assert result.exit_code == 1
    assert "--model" in result.output and "ANTHROPIC_MODEL" in result.output
    result = await invoke("register", "--client", "claude-code", "--model", "m")
    assert result.exit_code == 1
    assert "--api-key-env" in result.output and "ANTHROPIC_API_KEY" in result.output
    result = await invoke("register", "--client", "cursor", "--model", "m")
    assert result.exit_code == 1 and "--provider" in result.output


async def test_key_from_stdin_is_used_and_never_shown(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """--api-key-stdin reads the first line; the output shows only the masked key."""
    args = ["--provider", "openai", "--model", "gpt-test", "--api-key-stdin"]
    result = await invoke("register", "--client", "codex", *args, input=KEY + "\n")
    assert result.exit_code == 0, result.output
    assert KEY not in result.output and "sk-a…cdef" in result.output
    [instance] = await instances(gateway_url)
    assert instance["api_key"] == "sk-a…cdef"


async def test_rerun_with_the_same_configuration_is_a_no_op(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """The second run reports the same id, changes no file and creates no instance."""
    first = await invoke("register", "--client", "claude-code", *flags(), TEST_KEY=KEY)
    path = clean_env / ID_FILES["claude-code"]
    before = path.stat().st_mtime_ns
    second = await invoke("register", "--client", "claude-code", *flags(), TEST_KEY=KEY)
    assert second.exit_code == 0, second.output
    [instance] = await instances(gateway_url)
    assert instance["instance_id"] in first.output
    assert f"already registered as {instance['instance_id']}" in second.output
    assert path.stat().st_mtime_ns == before


async def test_a_new_key_updates_the_instance_instead_of_adding_one(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """A changed key is written over the saved instance: one instance, same id, new key."""
    await invoke("register", "--client", "claude-code", *flags(), TEST_KEY=KEY)
    [before] = await instances(gateway_url)
    result = await invoke("register", "--client", "claude-code", *flags(), TEST_KEY=NEW_KEY)
    assert result.exit_code == 0, result.output
    [after] = await instances(gateway_url)
    assert after["instance_id"] == before["instance_id"]
    assert after["api_key"] == "sk-a…3210"
    assert "the id stays the same" in result.output
    again = await invoke("register", "--client", "claude-code", *flags(), TEST_KEY=NEW_KEY)
    assert "nothing changed" in again.output
    assert len(await instances(gateway_url)) == 1


async def test_a_key_change_with_an_admin_token_updates_in_place(
    gateway_server: Any, make_settings: Callable[..., Settings], clean_env: Path
) -> None:
    """With an admin token on the gateway, register sends it and still updates in place."""
    server = await gateway_server(create_app(make_settings(admin_token=ADMIN)))
    url = str(server.make_url("")).rstrip("/")
    runner = CliRunner()

    async def run(key: str) -> Result:
        argv = ["register", "--client", "codex", *flags(), "--gateway", url]
        env = {"TEST_KEY": key, "POWERMEM_GATEWAY_ADMIN_TOKEN": ADMIN}
        return await asyncio.to_thread(runner.invoke, cli, argv, env=env)

    await run(KEY)
    result = await run(NEW_KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(url, ADMIN)
    assert instance["api_key"] == "sk-a…3210"
    assert (clean_env / ID_FILES["codex"]).read_text().strip() == instance["instance_id"]


async def test_a_saved_id_the_gateway_forgot_is_replaced(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """A stale id in the tool's file is overwritten by a fresh registration."""
    path = clean_env / ID_FILES["opencode"]
    path.parent.mkdir(parents=True)
    path.write_text("pmem-0000000000000000\n")
    result = await invoke("register", "--client", "opencode", *flags(), TEST_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    assert path.read_text() == instance["instance_id"] + "\n"
    assert "no longer registered" in result.output


CURSOR_MCP = """{
    "mcpServers": {
        "github": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-github"],
            "env": {"GITHUB_TOKEN": "ghp-ünïcode"}
        },
        "powermem": {"url": "http://old-host:8848/mcp", "headers": {"X-Other": "kept"}}
    },
    "otherSetting": true
}
"""


async def test_cursor_mcp_json_is_merged_keeping_other_servers(
    invoke: Invoke, gateway_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the powermem entry's url changes (byte for byte elsewhere); unregister restores it."""
    project = tmp_path / "project"
    (project / ".cursor").mkdir(parents=True)
    path = project / ".cursor" / "mcp.json"
    path.write_text(CURSOR_MCP, encoding="utf-8")
    monkeypatch.chdir(project)
    result = await invoke("register", "--client", "cursor", *flags(), TEST_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    scoped = f"{gateway_url}/i/{instance['instance_id']}/mcp"
    text = path.read_text(encoding="utf-8")
    assert text == CURSOR_MCP.replace("http://old-host:8848/mcp", scoped)
    assert json.loads(text)["mcpServers"]["powermem"]["headers"] == {"X-Other": "kept"}
    assert mode(path) == 0o600
    assert f"mcpServers.powermem.url now points at {scoped}" in result.output

    result = await invoke("unregister", "--client", "cursor")
    assert result.exit_code == 0, result.output
    assert path.read_text(encoding="utf-8") == CURSOR_MCP
    assert "back to http://old-host:8848/mcp" in result.output
    assert await instances(gateway_url) == []


async def test_cursor_global_creates_the_users_mcp_json(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """--global writes ~/.cursor/mcp.json, created with the powermem server alone, no header."""
    result = await invoke("register", "--client", "cursor", "--global", *flags(), TEST_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    path = clean_env / ".cursor" / "mcp.json"
    assert json.loads(path.read_text()) == {
        "mcpServers": {"powermem": {"url": f"{gateway_url}/i/{instance['instance_id']}/mcp"}}
    }
    assert mode(path) == 0o600
    result = await invoke("unregister", "--client", "cursor", "--global")
    assert result.exit_code == 0, result.output
    assert not path.exists()


async def test_invalid_cursor_mcp_json_is_refused_and_left_untouched(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """Broken JSON gives a clear error naming the file; nothing is written or registered."""
    path = clean_env / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text('{"mcpServers": {,}}')
    result = await invoke("register", "--client", "cursor", "--global", *flags(), TEST_KEY=KEY)
    assert result.exit_code == 1
    assert "not valid JSON" in result.output and str(path) in result.output
    assert path.read_text() == '{"mcpServers": {,}}'
    assert await instances(gateway_url) == []


async def test_any_other_mcp_client_gets_a_snippet_to_paste(
    invoke: Invoke, gateway_url: str
) -> None:
    """--print-mcp-config prints the server entry, its scoped URL, as JSON on stdout."""
    args = ["register", "--client", "windsurf", *flags(), "--print-mcp-config"]
    result = await invoke(*args, TEST_KEY=KEY)
    assert result.exit_code == 0, result.output
    [instance] = await instances(gateway_url)
    assert json.loads(result.stdout) == {
        "mcpServers": {"powermem": {"url": f"{gateway_url}/i/{instance['instance_id']}/mcp"}}
    }
    unknown = await invoke("register", "--client", "windsurf", *flags(), TEST_KEY=KEY)
    assert unknown.exit_code == 2 and "--print-mcp-config" in unknown.output


async def test_unregister_deletes_the_instance_and_the_saved_id(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """After unregister the gateway no longer knows the id and the file is gone."""
    await invoke("register", "--client", "codex", *flags(), TEST_KEY=KEY)
    result = await invoke("unregister", "--client", "codex")
    assert result.exit_code == 0, result.output
    assert await instances(gateway_url) == []
    assert not (clean_env / ID_FILES["codex"]).exists()
    again = await invoke("unregister", "--client", "codex")
    assert again.exit_code == 0 and "nothing to do" in again.output


async def test_an_unreachable_gateway_is_a_clear_error(clean_env: Path) -> None:
    """Nothing listening: the message names the URL and how to start the gateway."""
    argv = ["register", "--client", "codex", *flags(), "--gateway", "http://127.0.0.1:9"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, argv, env={"TEST_KEY": KEY})
    assert result.exit_code == 1
    assert "http://127.0.0.1:9" in result.output and "powermem-gateway serve" in result.output
    assert not (clean_env / ID_FILES["codex"]).exists()


def readme_plugin_example() -> str:
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("### For plugin authors", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_readme_plugin_example_registers_stores_and_sends_the_id(
    gateway_url: str, clean_env: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's stdlib example registers, saves a 0600 id file, and its hook is bound."""
    monkeypatch.setenv("POWERMEM_GATEWAY_URL", gateway_url)
    monkeypatch.setenv("ANTHROPIC_MODEL", "claude-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    namespace: dict[str, Any] = {}
    exec(compile(readme_plugin_example(), "README.md", "exec"), namespace)  # noqa: S102
    answer = await asyncio.to_thread(namespace["search_memories"], "cats", "u1")
    assert answer["success"] is True
    [instance] = await instances(gateway_url)
    path = clean_env / ID_FILES["claude-code"]
    assert path.read_text() == instance["instance_id"] + "\n"
    assert mode(path) == 0o600
    assert instance_of(recorder.last.headers["baggage"]) == instance["instance_id"]


async def test_codex_without_its_key_variable_is_an_error_not_a_downgrade(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """Rerun in a shell without Codex's env_key: an error naming it; the instance keeps its key."""
    config = clean_env / ".codex" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        'model = "my-model"\nmodel_provider = "corp"\n\n'
        '[model_providers.corp]\nname = "Corp"\n'
        'base_url = "http://127.0.0.1:9/v1"\nenv_key = "CORP_API_KEY"\n'
    )
    first = await invoke("register", "--client", "codex", CORP_API_KEY=KEY)
    assert first.exit_code == 0, first.output
    [before] = await instances(gateway_url)
    again = await invoke("register", "--client", "codex")
    assert again.exit_code != 0
    assert "CORP_API_KEY" in again.output and "nothing was changed" in again.output
    [after] = await instances(gateway_url)
    assert after == before and after["provider"] == "openai" and after["api_key"]


async def test_an_update_that_drops_the_key_needs_force(
    invoke: Invoke, gateway_url: str, clean_env: Path
) -> None:
    """Switching a keyed instance to a keyless provider is refused unless --force."""
    first = await invoke("register", "--client", "codex", *flags(), TEST_KEY=KEY)
    assert first.exit_code == 0, first.output
    keyless = ["--provider", "ollama", "--model", "llama3.1"]
    refused = await invoke("register", "--client", "codex", *keyless)
    assert refused.exit_code != 0 and "--force" in refused.output
    [kept] = await instances(gateway_url)
    assert kept["provider"] == "anthropic" and kept["api_key"]
    forced = await invoke("register", "--client", "codex", *keyless, "--force")
    assert forced.exit_code == 0, forced.output
    [changed] = await instances(gateway_url)
    assert changed["provider"] == "ollama"
