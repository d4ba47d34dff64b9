"""Each coding tool as register sees it: the id file of the feature request's table, and the
knob the tool really reads (gateway.clients.knobs).

The id files stay (plugins written against the feature request read them); the knob is what
makes the tool's requests reach its own instance. A tool's saved id is its id file's, else
the instance its knob's scoped URL names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.clients.errors import ConfigFileError
from gateway.clients.knobformats import JsonKnob
from gateway.clients.knobs import INSTANCE_HEADER, MCP_SERVER_NAME, ToolKnob, knob_for
from gateway.clients.safefile import read_config, remove_config, same_text, write_config
from gateway.clients.scoped import parse_scoped

__all__ = ["FILE_CLIENTS", "KNOWN_CLIENTS", "IdFile", "Tool", "mcp_config", "tool_for", "tools"]

# The per-tool table of the feature request: tool → id file, relative to the home folder.
FILE_CLIENTS: dict[str, str] = {
    "claude-code": ".powermem/instance.id",
    "codex": ".codex/powermem-instance.id",
    "opencode": ".config/opencode/powermem-instance.id",
}
KNOWN_CLIENTS = ("claude-code", "codex", "opencode", "cursor")


@dataclass(frozen=True)
class IdFile:
    """A one-line file holding the id; written atomically, 0600, never through a link."""

    path: Path

    def read(self) -> str | None:
        text = read_config(self.path)
        return (text.strip() or None) if text is not None else None

    def write(self, instance_id: str) -> None:
        text = instance_id + "\n"
        if not same_text(self.path, text):
            write_config(self.path, text)

    def remove(self) -> bool:
        return remove_config(self.path)


@dataclass(frozen=True)
class Tool:
    client: str
    label: str
    id_file: IdFile | None
    knob: ToolKnob | None

    def knob_url(self) -> str | None:
        return self.knob.file.read() if self.knob is not None else None

    def saved_id(self) -> str | None:
        """The id register saved for this tool, or None."""
        if self.id_file is not None and (saved := self.id_file.read()):
            return saved
        url = self.knob_url()
        scoped = parse_scoped(url) if url else None
        if scoped is not None:
            return scoped.instance_id
        if self.knob is not None and isinstance(self.knob.file, JsonKnob):
            # An older register put the id in a header of Cursor's entry.
            text = read_config(self.knob.file.path)
            return self.knob.file.header(text, INSTANCE_HEADER) if text else None
        return None

    def saved_secret(self, instance_id: str) -> str | None:
        """The instance secret in the knob's URL, when that URL names `instance_id`."""
        with contextlib.suppress(ConfigFileError):
            url = self.knob_url()
            scoped = parse_scoped(url) if url else None
            if scoped is not None and scoped.instance_id == instance_id:
                return scoped.secret
        return None


def tool_for(
    client: str,
    *,
    home: Path,
    environ: Mapping[str, str],
    cwd: Path | None = None,
    cursor_global: bool = False,
) -> Tool | None:
    """`client`'s files, or None for a client we know nothing about (print its config)."""
    if client not in KNOWN_CLIENTS:
        return None
    knob = knob_for(client, home=home, environ=environ, cwd=cwd, cursor_global=cursor_global)
    id_file = IdFile(home / FILE_CLIENTS[client]) if client in FILE_CLIENTS else None
    label = knob.label if knob is not None else client
    return Tool(client, label, id_file, knob)


def tools(*, home: Path, environ: Mapping[str, str], cwd: Path | None = None) -> list[Tool]:
    """Every tool set up on this machine: an id file, or a knob file that exists."""
    candidates = [tool_for(name, home=home, environ=environ, cwd=cwd) for name in FILE_CLIENTS] + [
        tool_for("cursor", home=home, environ=environ, cwd=cwd, cursor_global=True)
    ]
    project = tool_for("cursor", home=home, environ=environ, cwd=cwd)
    assert project is not None and project.knob is not None
    if project.knob.file.path != home / ".cursor" / "mcp.json":
        candidates.append(project)
    found = []
    for tool in candidates:
        assert tool is not None
        id_file = tool.id_file is not None and tool.id_file.path.exists()
        knob = tool.knob is not None and _mentions_gateway(tool)
        if id_file or knob:
            found.append(tool)
    return found


def _mentions_gateway(tool: Tool) -> bool:
    """Whether the knob is set to a scoped URL (or unreadable: doctor reports that)."""
    try:
        return tool.saved_id() is not None
    except ConfigFileError:
        return True


def mcp_config(url: str) -> dict[str, Any]:
    """The entry to paste into an MCP client's config (streamable HTTP; no header needed)."""
    return {"mcpServers": {MCP_SERVER_NAME: {"url": url}}}
