"""One URL setting inside a tool's own config file, in that file's own format.

A `KnobFile` reads the setting, writes it (merging: every other line, key, comment and the
file's formatting stay as they were) and undoes its own write. Each write reports a `Change`:
what it added or the value it replaced, so `unregister` can put back exactly what was there.
Formats: `KEY=value` lines (runtime.env), JSON/JSONC (Cursor, OpenCode) and TOML (Codex,
through tomlkit, which keeps comments and layout byte for byte).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.clients.errors import ConfigFileError
from gateway.clients.safefile import read_config, remove_config, same_text, write_config

__all__ = ["Change", "KnobFile", "restore_tail"]

_SPACE = " \t\r\n"


@dataclass(frozen=True)
class Change:
    """What register did to a knob file.

    `added` is "" when it replaced a value (`previous`, written in the file as `raw`; without
    `raw` it is written the format's usual way), or what it added: "url" (a member of an
    existing entry), "entry", "container" or "file".
    `tail` is the file's trailing whitespace before the change (TOML and env edits may add
    a blank line that removing the entry again would leave behind).
    """

    added: str
    previous: str | None = None
    raw: str | None = None
    tail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Change | None:
        if not isinstance(data, dict):
            return None
        added, previous, raw, tail = (data.get(k) for k in ("added", "previous", "raw", "tail"))
        if not isinstance(added, str) or not isinstance(tail, str):
            return None
        if not (previous is None or isinstance(previous, str)):
            return None
        if not (raw is None or isinstance(raw, str)):
            return None
        return cls(added, previous, raw, tail)


def tail_of(text: str) -> str:
    return text[len(text.rstrip(_SPACE)) :]


def restore_tail(text: str, tail: str) -> str:
    body = text.rstrip(_SPACE)
    return body + tail if body else ""


class KnobFile(ABC):
    """A setting holding a URL in `path`; subclasses know the format."""

    path: Path
    setting: str  # how the user finds it in the file, e.g. mcpServers.powermem.url

    # -- the format --------------------------------------------------------------------------

    @abstractmethod
    def get(self, text: str) -> str | None:
        """The URL set in `text`, None when it is not set; ConfigFileError if malformed."""

    @abstractmethod
    def set(self, text: str, url: str) -> tuple[str, Change]:
        """`text` with the URL set; refuses (ConfigFileError) what it must not change."""

    @abstractmethod
    def unset(self, text: str, change: Change) -> str:
        """`text` with `change` undone."""

    @abstractmethod
    def fresh(self, url: str) -> str:
        """A new file holding only the setting."""

    @abstractmethod
    def is_empty(self, text: str) -> bool:
        """Whether nothing but what register wrote is left (the file can go)."""

    def notes(self, text: str) -> list[str]:
        """Things about the setting's entry the user should know (e.g. it is disabled)."""
        return []

    # -- reading and writing ----------------------------------------------------------------

    def malformed(self, detail: str) -> ConfigFileError:
        return ConfigFileError(
            f"{self.path} {detail}; fix it first (it was left untouched, nothing was changed)."
        )

    def read(self) -> str | None:
        text = read_config(self.path)
        return None if text is None else self.get(text)

    def current_notes(self) -> list[str]:
        text = read_config(self.path)
        return [] if text is None else self.notes(text)

    def check(self) -> None:
        """Refuse now (before anything is registered) what `write` would refuse."""
        text = read_config(self.path)
        if text is not None:
            self.set(text, "http://127.0.0.1/check")

    def write(self, url: str, remember: Callable[[Change], None] | None = None) -> Change | None:
        """Set the URL; the change made, or None when the file already said so.

        `remember` gets the change before the file is written, so whoever keeps it for an
        undo has it even if this process dies in between."""
        text = read_config(self.path)
        if text is None:
            new, change = self.fresh(url), Change("file")
        else:
            new, change = self.set(text, url)
            change = Change(change.added, change.previous, change.raw, tail_of(text))
        if new == text:
            if not same_text(self.path, new):
                write_config(self.path, new)  # only its mode was wrong
            return None
        if remember is not None:
            remember(change)
        write_config(self.path, new)
        return change

    def undo(self, change: Change) -> bool:
        """Put back what was there before `change`; False when the file is gone."""
        text = read_config(self.path)
        if text is None:
            return False
        new = self.unset(text, change)
        if change.previous is None:
            new = restore_tail(new, change.tail)
        if change.added == "file" and self.is_empty(new):
            return remove_config(self.path)
        if new != text:
            write_config(self.path, new)
        return True
