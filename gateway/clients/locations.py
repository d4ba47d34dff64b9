"""Where each coding tool looks for its instance id, and how we write it there.

Every write is atomic (a temporary file in the same folder, then a rename) and leaves the file
with mode 0600. Cursor keeps the id as a header of the powermem server in its `mcp.json`; that
file is merged, never rewritten from scratch: other servers, other keys, the indentation and
the trailing newline all stay as they were.
"""

from __future__ import annotations

import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gateway.clients.errors import ConfigFileError
from gateway.files import write_private_file

__all__ = [
    "FILE_CLIENTS",
    "INSTANCE_HEADER",
    "MCP_SERVER_NAME",
    "CursorMcpJson",
    "IdFile",
    "IdLocation",
    "location_for",
    "mcp_snippet",
    "saved_locations",
]

INSTANCE_HEADER = "X-PowerMem-Instance"
MCP_SERVER_NAME = "powermem"

# The per-tool table of the feature request: tool → id file, relative to the home folder.
FILE_CLIENTS: dict[str, str] = {
    "claude-code": ".powermem/instance.id",
    "codex": ".codex/powermem-instance.id",
    "opencode": ".config/opencode/powermem-instance.id",
}


class IdLocation(Protocol):
    """One place a tool reads its instance id from."""

    @property
    def path(self) -> Path: ...

    def read(self) -> str | None: ...

    def write(self, instance_id: str) -> None: ...

    def remove(self) -> bool: ...


def _write_if_changed(path: Path, text: str) -> None:
    """Atomically write `text` with mode 0600, unless the file already is exactly that."""
    try:
        if path.read_text(encoding="utf-8") == text and stat.S_IMODE(path.stat().st_mode) == 0o600:
            return
    except (OSError, UnicodeDecodeError):
        pass
    # New folders are private; folders the tool already made keep their mode.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_file(path, text)


@dataclass(frozen=True)
class IdFile:
    """A one-line file holding the id (Claude Code, Codex, OpenCode)."""

    path: Path

    def read(self) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"Cannot read {self.path}: {exc}.") from None
        return text or None

    def write(self, instance_id: str) -> None:
        _write_if_changed(self.path, instance_id + "\n")

    def remove(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def mcp_snippet(gateway: str, instance_id: str) -> dict[str, Any]:
    """The MCP server entry for powermem behind the gateway (streamable HTTP at `/mcp`)."""
    return {"url": f"{gateway.rstrip('/')}/mcp", "headers": {INSTANCE_HEADER: instance_id}}


def _indent_of(text: str) -> int | str:
    """The file's indentation: a tab, or the width of its first indented line (default 2)."""
    match = re.search(r"\n([ \t]+)\S", text)
    if not match:
        return 2
    lead = match.group(1)
    return "\t" if lead.startswith("\t") else len(lead)


@dataclass(frozen=True)
class CursorMcpJson:
    """`mcpServers.powermem.headers["X-PowerMem-Instance"]` in a Cursor `mcp.json`."""

    path: Path
    gateway: str

    def _load(self) -> tuple[dict[str, Any], str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"Cannot read {self.path}: {exc}.") from None
        if not text.strip():
            return {}, text
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigFileError(
                f"{self.path} is not valid JSON (line {exc.lineno}, column {exc.colno}); "
                "fix it first, it was left untouched."
            ) from None
        if not isinstance(data, dict):
            raise ConfigFileError(f"{self.path} must hold a JSON object; it was left untouched.")
        servers = data.get("mcpServers", {})
        if not isinstance(servers, dict):
            raise ConfigFileError(
                f"'mcpServers' in {self.path} is not an object; it was left untouched."
            )
        return data, text

    def _entry(self, data: dict[str, Any]) -> dict[str, Any] | None:
        entry = data.get("mcpServers", {}).get(MCP_SERVER_NAME)
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise ConfigFileError(
                f"mcpServers.{MCP_SERVER_NAME} in {self.path} is not an object; "
                "it was left untouched."
            )
        return entry

    def _save(self, data: dict[str, Any], old_text: str) -> None:
        text = json.dumps(data, indent=_indent_of(old_text), ensure_ascii=False)
        if not old_text or old_text.endswith("\n"):
            text += "\n"
        _write_if_changed(self.path, text)

    def read(self) -> str | None:
        data, _ = self._load()
        entry = self._entry(data)
        headers = entry.get("headers") if entry else None
        value = headers.get(INSTANCE_HEADER) if isinstance(headers, dict) else None
        return (value.strip() or None) if isinstance(value, str) else None

    def write(self, instance_id: str) -> None:
        data, text = self._load()
        entry = self._entry(data)
        if entry is not None and "command" in entry:
            raise ConfigFileError(
                f"mcpServers.{MCP_SERVER_NAME} in {self.path} starts a local command (stdio), "
                f"which cannot carry an {INSTANCE_HEADER} header; replace it with "
                f'{{"url": "{self.gateway}/mcp"}} (or remove it) and run register again. '
                "The file was left untouched."
            )
        if entry is not None and not isinstance(entry.get("headers", {}), dict):
            raise ConfigFileError(
                f"mcpServers.{MCP_SERVER_NAME}.headers in {self.path} is not an object; "
                "it was left untouched."
            )
        wanted = mcp_snippet(self.gateway, instance_id)
        if entry is None:
            data.setdefault("mcpServers", {})[MCP_SERVER_NAME] = wanted
        else:
            entry["url"] = wanted["url"]
            entry.setdefault("headers", {})[INSTANCE_HEADER] = instance_id
        self._save(data, text)

    def remove(self) -> bool:
        """Drop the id header (the server entry stays, using the gateway's default LLM)."""
        data, text = self._load()
        entry = self._entry(data)
        headers = entry.get("headers") if entry else None
        if entry is None or not isinstance(headers, dict) or INSTANCE_HEADER not in headers:
            return False
        del headers[INSTANCE_HEADER]
        if not headers:
            del entry["headers"]
        self._save(data, text)
        return True


def location_for(
    client: str, *, home: Path, gateway: str, cursor_global: bool = False, cwd: Path | None = None
) -> IdLocation | None:
    """Where `client` keeps its id; None for a client we do not know (print its config)."""
    if client in FILE_CLIENTS:
        return IdFile(home / FILE_CLIENTS[client])
    if client == "cursor":
        base = home if cursor_global else (cwd or Path.cwd())
        return CursorMcpJson(base / ".cursor" / "mcp.json", gateway)
    return None


def saved_locations(
    *, home: Path, gateway: str, cwd: Path | None = None
) -> list[tuple[str, IdLocation]]:
    """Every known location that currently holds an id, as (label, location)."""
    found: list[tuple[str, IdLocation]] = []
    candidates: list[tuple[str, IdLocation]] = [
        (name, IdFile(home / rel)) for name, rel in FILE_CLIENTS.items()
    ]
    project = CursorMcpJson((cwd or Path.cwd()) / ".cursor" / "mcp.json", gateway)
    user = CursorMcpJson(home / ".cursor" / "mcp.json", gateway)
    candidates.append(("cursor (global)", user))
    if project.path != user.path:
        candidates.append(("cursor (project)", project))
    for label, location in candidates:
        try:
            if location.read():
                found.append((label, location))
        except ConfigFileError:
            found.append((label, location))  # doctor reports the unreadable file
    return found
