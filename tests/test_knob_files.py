"""Each tool's knob file, in its real format: one value changes, every other byte stays, and
the undo gives back the file as it was. Examples follow the tools' own documentation."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.clients.errors import ConfigFileError
from gateway.clients.jsonedit import JsonDoc, JsonEditError
from gateway.clients.knobfiles import Change, KnobFile
from gateway.clients.knobs import knob_for

URL = "http://127.0.0.1:8848/i/pmem-0123456789abcdef"
SHARED = "http://127.0.0.1:8848/i/pmem-0123456789abcdef~pmis-Ab_c-12"

# Codex's docs: a stdio server, a streamable-HTTP one, projects, comments.
CODEX = """# ~/.codex/config.toml
model = "gpt-5-codex"
model_reasoning_effort = "high"   # think harder

[projects."/home/me/work"]
trust_level = "trusted"

[mcp_servers.context7]
command = "npx"
args = ["-y", "@upstash/context7-mcp"]

[mcp_servers.figma]
url = "https://mcp.figma.com/mcp"
bearer_token_env_var = "FIGMA_OAUTH_TOKEN"
http_headers = { "X-Figma-Region" = "us-east-1" }
"""
CODEX_WITH_POWERMEM = (
    CODEX
    + """
[mcp_servers.powermem]
url = 'http://localhost:8848/mcp'   # powermem's own server
startup_timeout_sec = 20
"""
)
# OpenCode's docs: JSONC with comments and trailing commas, a local and a remote server.
OPENCODE = """{
  "$schema": "https://opencode.ai/config.json",
  // the model OpenCode thinks with
  "model": "anthropic/claude-sonnet-4-5",
  "mcp": {
    "my-local-mcp-server": {
      "type": "local",
      "command": ["bun", "x", "my-mcp-command"],
      "enabled": true,
    },
    /* a remote one */
    "jira": {"type": "remote", "url": "https://jira.example.com/mcp", "enabled": true},
  },
}
"""
# Cursor's docs: stdio and remote servers, 2-space indent, unicode kept as is.
CURSOR = """{
  "mcpServers": {
    "github": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp-ünïcode"}
    },
    "remote": {"url": "https://example.com/mcp", "headers": {"API_KEY": "value"}}
  }
}
"""
# What powermem's Claude Code plugin init writes, plus a user's own lines.
RUNTIME_ENV = """# written by powermem init
POWERMEM_BASE_URL=http://localhost:8848
POWERMEM_ENV_FILE=/home/me/.powermem/.env
export POWERMEM_PROMPT_SEARCH=0   # keep prompts private
"""

Make = Callable[[Path], KnobFile]


def knob(client: str, home: Path) -> KnobFile:
    found = knob_for(client, home=home, environ={}, cwd=home, cursor_global=True)
    assert found is not None
    return found.file


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sourced(path: Path, name: str) -> str:
    """What a POSIX shell that sources the file, as the hook launcher does, sees in `name`."""
    script = f'set -a; . "{path}"; printf %s "${name}"'
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


# -- each format: one value changes, the undo restores every byte ------------------------------

CASES = [
    # (client, file content before, what the content must be after register)
    (
        "claude-code",
        RUNTIME_ENV,
        RUNTIME_ENV.replace("POWERMEM_BASE_URL=http://localhost:8848", f"POWERMEM_BASE_URL={URL}"),
    ),
    (
        "codex",
        CODEX_WITH_POWERMEM,
        CODEX_WITH_POWERMEM.replace("'http://localhost:8848/mcp'", f'"{URL}/mcp"'),
    ),
    (
        "codex",
        CODEX,
        CODEX + f'\n[mcp_servers.powermem]\nurl = "{URL}/mcp"\n',
    ),
    (
        "opencode",
        OPENCODE,
        OPENCODE.replace(
            '"enabled": true},\n  },',
            '"enabled": true},\n    "powermem": {\n      "type": "remote",\n'
            f'      "url": "{URL}/mcp",\n      "enabled": true\n    }},\n  }},',
        ),
    ),
    (
        "cursor",
        CURSOR,
        CURSOR.replace(
            '"headers": {"API_KEY": "value"}}\n',
            '"headers": {"API_KEY": "value"}},\n'
            f'    "powermem": {{\n      "url": "{URL}/mcp"\n    }}\n',
        ),
    ),
]


@pytest.mark.parametrize(("client", "before", "after"), CASES)
def test_register_changes_one_value_and_undo_restores_every_byte(
    client: str, before: str, after: str, tmp_path: Path
) -> None:
    """Comments, unrelated entries, quoting and layout survive; undo gives back the original."""
    file = knob(client, tmp_path)
    write(file.path, before)
    url = URL if client == "claude-code" else URL + "/mcp"
    change = file.write(url)
    assert change is not None
    assert file.path.read_text(encoding="utf-8") == after
    assert file.read() == url
    assert mode(file.path) == 0o600
    assert not list(file.path.parent.glob(".*.tmp"))
    assert file.write(url) is None  # idempotent: nothing left to change
    assert file.path.read_text(encoding="utf-8") == after
    file.undo(Change.from_json(json.loads(json.dumps(change.to_json()))) or change)
    assert file.path.read_text(encoding="utf-8") == before


def test_each_file_reads_back_in_the_tools_own_parser(tmp_path: Path) -> None:
    """What a shell, tomllib and json make of the written files is the scoped URL."""
    for client, before, _ in CASES:
        if client == "opencode":
            continue  # JSONC: no strict parser in the standard library
        file = knob(client, tmp_path / client)
        write(file.path, before)
        file.write(SHARED if client == "claude-code" else SHARED + "/mcp")
    assert sourced(knob("claude-code", tmp_path / "claude-code").path, "POWERMEM_BASE_URL") == (
        SHARED
    )
    codex = tomllib.loads(knob("codex", tmp_path / "codex").path.read_text())
    assert codex["mcp_servers"]["powermem"]["url"] == SHARED + "/mcp"
    assert codex["mcp_servers"]["figma"]["http_headers"] == {"X-Figma-Region": "us-east-1"}
    cursor = json.loads(knob("cursor", tmp_path / "cursor").path.read_text())
    assert cursor["mcpServers"]["powermem"] == {"url": SHARED + "/mcp"}


@pytest.mark.parametrize("client", ["claude-code", "codex", "opencode", "cursor"])
def test_a_missing_file_is_created_0600_and_removed_by_the_undo(
    client: str, tmp_path: Path
) -> None:
    """No file yet: register creates it (folders 0700) holding the setting alone."""
    file = knob(client, tmp_path)
    change = file.write(URL)
    assert change is not None and change.added == "file"
    assert file.read() == URL and mode(file.path) == 0o600
    file.undo(change)
    assert not file.path.exists()


def test_opencode_gets_a_remote_entry_as_its_docs_show(tmp_path: Path) -> None:
    """`mcp.powermem` is `{"type": "remote", "url": …, "enabled": true}`."""
    file = knob("opencode", tmp_path)
    file.write(URL + "/mcp")
    assert json.loads(file.path.read_text()) == {
        "mcp": {"powermem": {"type": "remote", "url": URL + "/mcp", "enabled": True}}
    }


def test_a_runtime_env_without_final_newline_is_restored_exactly(tmp_path: Path) -> None:
    """An appended line gets its own line; the undo takes the added newline away again."""
    file = knob("claude-code", tmp_path)
    write(file.path, "POWERMEM_ENV_FILE=/x/.env")
    change = file.write(URL)
    assert file.path.read_text() == f"POWERMEM_ENV_FILE=/x/.env\nPOWERMEM_BASE_URL={URL}\n"
    assert change is not None
    file.undo(change)
    assert file.path.read_text() == "POWERMEM_ENV_FILE=/x/.env"


def test_cursor_drops_the_header_an_older_register_wrote(tmp_path: Path) -> None:
    """The URL names the instance now; the old X-PowerMem-Instance header goes, others stay."""
    file = knob("cursor", tmp_path)
    old = {"url": "http://127.0.0.1:8848/mcp", "headers": {"X-PowerMem-Instance": "pmem-1"}}
    write(file.path, json.dumps({"mcpServers": {"powermem": old}}, indent=2))
    file.write(URL + "/mcp")
    assert json.loads(file.path.read_text()) == {"mcpServers": {"powermem": {"url": URL + "/mcp"}}}


# -- refusals: the file is left untouched ---------------------------------------------------------

MALFORMED = [
    ("cursor", '{"mcpServers": {,}}', "not valid JSON (line 1, column 17)"),
    ("cursor", '["not", "an", "object"]', "must hold a JSON object"),
    ("cursor", '{"mcpServers": []}', "'mcpServers' is not an object"),
    ("cursor", '{"mcpServers": {"powermem": {"url": 8848}}}', "is not a string"),
    ("cursor", '{"mcpServers": {"powermem": {}, "powermem": {}}}', "appears 2 times"),
    ("opencode", '{"mcp": {"powermem": {"type": "local", "command": ["x"]}}}', "(stdio)"),
    ("cursor", '{"mcpServers": {"powermem": {"command": "uvx"}}}', "(stdio)"),
    ("codex", 'model = "x"\n[mcp_servers\n', "not valid TOML"),
    ("codex", 'mcp_servers = "nope"\n', "'mcp_servers' is not a table"),
    ("codex", '[mcp_servers.powermem]\ncommand = "uvx"\n', "(stdio)"),
    ("opencode", '{"mcp": {"a": 1} /* unterminated', "not valid JSON"),
]


@pytest.mark.parametrize(("client", "text", "message"), MALFORMED)
def test_a_file_register_cannot_safely_change_is_refused_and_left_untouched(
    client: str, text: str, message: str, tmp_path: Path
) -> None:
    """The error names the file and the problem; not one byte changes."""
    file = knob(client, tmp_path)
    write(file.path, text)
    os.chmod(file.path, 0o644)
    before = file.path.stat()
    with pytest.raises(ConfigFileError) as caught:
        file.write(URL + "/mcp")
    assert message in caught.value.message and str(file.path) in caught.value.message
    assert file.path.read_text() == text
    assert file.path.stat().st_mtime_ns == before.st_mtime_ns and mode(file.path) == 0o644


def test_a_value_a_shell_would_alter_is_refused(tmp_path: Path) -> None:
    """runtime.env is sourced: `$`, spaces or quotes in the URL would not come back intact."""
    file = knob("claude-code", tmp_path)
    with pytest.raises(ConfigFileError, match="unquoted"):
        file.write("http://host/$(rm -rf ~)")
    assert not file.path.exists()


def test_a_symlinked_config_file_is_never_written_through(tmp_path: Path) -> None:
    """`mcp.json -> some other file`: refused; the target keeps its content and mode."""
    target = tmp_path / "bashrc"
    target.write_text("alias ll='ls -l'\n")
    os.chmod(target, 0o644)
    file = knob("cursor", tmp_path)
    file.path.parent.mkdir(parents=True)
    file.path.symlink_to(target)
    with pytest.raises(ConfigFileError, match="symbolic link"):
        file.write(URL + "/mcp")
    with pytest.raises(ConfigFileError, match="symbolic link"):
        file.read()
    assert target.read_text() == "alias ll='ls -l'\n" and mode(target) == 0o644
    assert file.path.is_symlink()


def test_a_config_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    """A stranger's file (planted in a checkout, say) is neither read nor replaced."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    file = knob("codex", tmp_path)
    write(file.path, CODEX)
    os.chown(file.path, 65534, 65534)
    with pytest.raises(ConfigFileError, match="belongs to user id 65534"):
        file.write(URL + "/mcp")
    assert file.path.read_text() == CODEX and file.path.stat().st_uid == 65534


def test_a_fifo_in_place_of_the_file_does_not_hang(tmp_path: Path) -> None:
    """Something that is not a regular file is refused at once."""
    file = knob("claude-code", tmp_path)
    file.path.parent.mkdir(parents=True)
    os.mkfifo(file.path)
    with pytest.raises(ConfigFileError, match="not a regular file"):
        file.write(URL)


# -- the JSON editor on its own ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '{\n\t"a": {\n\t\t"b": [1, 2]\n\t}\n}\n',
        '{\n    "a": 1, // one\n    "b": {},\n}\n',
        "{}",
        '{\n  "escaped": "caf\\u00e9 \\"quoted\\"",\n  "n": -1.5e3\n}',
    ],
)
def test_json_insert_then_delete_is_the_identity(text: str) -> None:
    """Adding a member and dropping it again gives back the very same text."""
    doc = JsonDoc(text)
    assert doc.root is not None
    inserted = doc.insert(doc.root, "powermem", {"url": URL, "nested": {"x": [1]}})
    again = JsonDoc(inserted)
    assert again.root is not None
    assert again.root.python()["powermem"] == {"url": URL, "nested": {"x": [1]}}
    assert again.delete(again.root, "powermem") == text


def test_json_editor_refuses_what_json_refuses() -> None:
    """Unquoted keys, single quotes, two values and runaway nesting are errors, not guesses."""
    for bad in ("{a: 1}", "{'a': 1}", "{} {}", "[" * 500 + "]" * 500, '{"a": tru}'):
        with pytest.raises(JsonEditError):
            JsonDoc(bad)
