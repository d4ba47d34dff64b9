"""The knob each tool really reads for powermem's address, and how register turns it.

| tool        | file                                              | setting                    |
|-------------|---------------------------------------------------|----------------------------|
| claude-code | `$POWERMEM_DATA_DIR/runtime.env` (~/.powermem)     | `POWERMEM_BASE_URL=<url>`  |
| cursor      | `.cursor/mcp.json` (project) or `~/.cursor/…`     | `mcpServers.powermem.url`  |
| codex       | `$CODEX_HOME/config.toml` (~/.codex)              | `[mcp_servers.powermem] url` |
| opencode    | `~/.config/opencode/opencode.json` (or `.jsonc`)  | `mcp.powermem` (remote)    |

powermem's Claude Code hook launcher sources `runtime.env` from powermem's data dir at a
lower priority than the process environment, so POWERMEM_BASE_URL set in the shell or in the
`env` of `~/.claude/settings.json` wins over it (`overriding_base_url` finds that).

What register changed in each file is kept in `~/.powermem/gateway-knobs.json` (0600), so
unregister puts back the value that was there before, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clients.errors import ConfigFileError
from gateway.clients.knobfiles import Change, KnobFile
from gateway.clients.knobformats import EnvKnob, JsonKnob, TomlKnob
from gateway.clients.safefile import read_config, write_config
from gateway.clients.scoped import MCP_SUFFIX, masked, parse_scoped

__all__ = [
    "INSTANCE_HEADER",
    "KNOB_CLIENTS",
    "MCP_SERVER_NAME",
    "Records",
    "ToolKnob",
    "knob_for",
    "overriding_base_url",
    "unwire",
    "wire",
]

INSTANCE_HEADER = "X-PowerMem-Instance"
MCP_SERVER_NAME = "powermem"
BASE_URL_KEY = "POWERMEM_BASE_URL"
RECORDS_FILE = ".powermem/gateway-knobs.json"
KNOB_CLIENTS = ("claude-code", "cursor", "codex", "opencode")


@dataclass(frozen=True)
class ToolKnob:
    """One tool's URL setting; `mcp` tools get `<scoped>/mcp`, the hook the scoped base."""

    tool: str
    label: str
    file: KnobFile
    mcp: bool

    def url_for(self, base: str) -> str:
        return base.rstrip("/") + (MCP_SUFFIX if self.mcp else "")


def _stdio(entry: dict[str, Any]) -> str | None:
    if "command" in entry or entry.get("type") == "local":
        return (
            "starts powermem as a local command (stdio) instead of reaching it by URL; remove "
            "that entry (or rename it) and run register again"
        )
    return None


def claude_settings_env(home: Path) -> dict[str, str]:
    """The `env` block of ~/.claude/settings.json (Claude Code puts it in its hooks' env)."""
    try:
        data = json.loads((home / ".claude" / "settings.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict):
        return {}
    return {k: v for k, v in env.items() if isinstance(k, str) and isinstance(v, str)}


def powermem_data_dir(home: Path, environ: Mapping[str, str]) -> Path:
    """Where powermem's hook launcher looks for runtime.env (POWERMEM_DATA_DIR, ~/.powermem)."""
    for env in (claude_settings_env(home), environ):
        if value := env.get("POWERMEM_DATA_DIR", "").strip():
            return Path(value).expanduser()
    return home / ".powermem"


def overriding_base_url(home: Path, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(where, value) of a POWERMEM_BASE_URL the hook launcher prefers over runtime.env."""
    shown = "the env block of ~/.claude/settings.json"
    for where, env in ((shown, claude_settings_env(home)), ("this shell's environment", environ)):
        if value := env.get(BASE_URL_KEY, "").strip():
            return where, value
    return None


def _opencode_file(home: Path) -> Path:
    folder = home / ".config" / "opencode"
    jsonc = folder / "opencode.jsonc"
    return (
        jsonc
        if jsonc.exists() and not (folder / "opencode.json").exists()
        else (folder / "opencode.json")
    )


def knob_for(
    client: str,
    *,
    home: Path,
    environ: Mapping[str, str],
    cwd: Path | None = None,
    cursor_global: bool = False,
) -> ToolKnob | None:
    """The knob `client` reads, or None for a client whose config we do not write."""
    if client == "claude-code":
        path = powermem_data_dir(home, environ) / "runtime.env"
        return ToolKnob(client, client, EnvKnob(path, BASE_URL_KEY), mcp=False)
    if client == "cursor":
        base = home if cursor_global else (cwd or Path.cwd())
        label = "cursor (global)" if cursor_global else "cursor (project)"
        file = JsonKnob(
            base / ".cursor" / "mcp.json",
            "mcpServers",
            MCP_SERVER_NAME,
            {"url": None},
            _stdio,
            drop_headers=(INSTANCE_HEADER,),
        )
        return ToolKnob(client, label, file, mcp=True)
    if client == "codex":
        codex_home = environ.get("CODEX_HOME", "").strip()
        folder = Path(codex_home).expanduser() if codex_home else home / ".codex"
        file_ = TomlKnob(folder / "config.toml", "mcp_servers", MCP_SERVER_NAME, _stdio)
        return ToolKnob(client, client, file_, mcp=True)
    if client == "opencode":
        entry = {"type": "remote", "url": None, "enabled": True}
        json_file = JsonKnob(_opencode_file(home), "mcp", MCP_SERVER_NAME, entry, _stdio)
        return ToolKnob(client, client, json_file, mcp=True)
    return None


class Records:
    """What register changed in each knob file, for unregister (`~/.powermem/…knobs.json`)."""

    def __init__(self, home: Path) -> None:
        self.path = home / RECORDS_FILE

    def _load(self) -> dict[str, Any]:
        text = read_config(self.path)
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigFileError(
                f"{self.path} (what register changed, for unregister) is not valid JSON; "
                "fix or remove it."
            ) from None
        return data if isinstance(data, dict) else {}

    def get(self, path: Path) -> Change | None:
        return Change.from_json(self._load().get(str(path.absolute())))

    def put(self, path: Path, change: Change) -> None:
        data = self._load() | {str(path.absolute()): change.to_json()}
        write_config(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def drop(self, path: Path) -> None:
        data = self._load()
        if data.pop(str(path.absolute()), None) is not None:
            write_config(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def wire(knob: ToolKnob, url: str, records: Records) -> bool:
    """Point the knob at `url`; True when the file changed.

    The value it replaces is recorded only when it was not already a scoped gateway URL: a
    second register must not make "the previous value" one of its own."""
    current = knob.file.read()
    keep = current is not None and parse_scoped(current) is not None
    remember = None if keep else (lambda change: records.put(knob.file.path, change))
    return knob.file.write(url, remember) is not None


def unwire(knob: ToolKnob, instance_id: str, records: Records) -> str:
    """Undo register's change if the knob still names `instance_id`; what happened, in words."""
    path = knob.file.path
    current = knob.file.read()
    scoped = parse_scoped(current) if current is not None else None
    if scoped is None or scoped.instance_id != instance_id:
        return f"{path} does not point at {instance_id} (any more); it was left as it is"
    change = records.get(path)
    if change is None:
        # No record (register ran before records were kept): back to the gateway itself.
        change = Change("", previous=knob.url_for(scoped.gateway))
    still_there = knob.file.undo(change) and path.exists()
    records.drop(path)
    if change.previous is not None:
        return f"{path}: {knob.file.setting} is back to {masked(change.previous)}"
    if not still_there:
        return f"removed {path} (register had created it)"
    return f"{path}: removed the {knob.file.setting} register added"
