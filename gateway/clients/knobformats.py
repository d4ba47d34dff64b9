"""The three file formats a tool's URL knob lives in: `KEY=value` lines, JSON(C) and TOML.

tomlkit edits TOML in place: a parsed document keeps every comment, blank line and spelling,
so changing one value or adding one table leaves the rest of Codex's config.toml as it was
(the standard library reads TOML but cannot write it, and a line-based edit would have to
re-implement TOML's tables, dotted keys and inline tables to find the right line).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from gateway.clients.envlines import SHELL_SAFE, get_value, remove_key, set_value
from gateway.clients.jsonedit import JsonDoc, JsonEditError, Member, Node
from gateway.clients.knobfiles import Change, KnobFile

__all__ = ["EnvKnob", "JsonKnob", "TomlKnob"]

# Why an existing entry of that name cannot take a URL (a local command, say), or None.
EntryCheck = Callable[[dict[str, Any]], "str | None"]


@dataclass
class EnvKnob(KnobFile):
    """`KEY=<url>` in a file a shell sources (powermem's runtime.env)."""

    path: Path
    key: str

    @property
    def setting(self) -> str:  # type: ignore[override]
        return self.key

    def get(self, text: str) -> str | None:
        found = get_value(text, self.key)
        return found[0] if found else None

    def set(self, text: str, url: str) -> tuple[str, Change]:
        if not SHELL_SAFE.match(url):
            raise self.malformed(
                f"cannot hold {self.key}={url!r} unquoted: a shell would change it"
            )
        old = get_value(text, self.key)
        new, appended = set_value(text, self.key, url)
        if appended:
            return new, Change("entry")
        assert old is not None
        return new, Change("", old[0], old[1])

    def unset(self, text: str, change: Change) -> str:
        if change.previous is None:
            return remove_key(text, self.key)
        return set_value(text, self.key, change.raw or change.previous)[0]

    def fresh(self, url: str) -> str:
        return self.set("", url)[0]

    def is_empty(self, text: str) -> bool:
        return not text.strip()


@dataclass
class JsonKnob(KnobFile):
    """`<container>.<name>.url` in a JSON or JSONC file (Cursor, OpenCode)."""

    path: Path
    container: str
    name: str
    entry: dict[str, Any]  # a new entry, its "url" filled in (the key's place is kept)
    refuse: EntryCheck
    drop_headers: tuple[str, ...] = ()  # headers an older register wrote into the entry

    @property
    def setting(self) -> str:  # type: ignore[override]
        return f"{self.container}.{self.name}.url"

    def _new(self, url: str) -> dict[str, Any]:
        return {k: (url if k == "url" else v) for k, v in self.entry.items()}

    def _doc(self, text: str) -> JsonDoc:
        try:
            doc = JsonDoc(text)
        except JsonEditError as exc:
            where = f" (line {exc.where[0]}, column {exc.where[1]})" if exc.where else ""
            raise self.malformed(f"is not valid JSON{where}: {exc.message}") from None
        if doc.root is not None and doc.root.kind != "object":
            raise self.malformed("must hold a JSON object")
        return doc

    def _member(self, obj: Node, key: str, what: str) -> Member | None:
        try:
            found = JsonDoc.member(obj, key)
        except JsonEditError as exc:
            raise self.malformed(exc.message) from None
        if found is not None and found.value.kind != "object":
            raise self.malformed(f"{what} is not an object")
        return found

    def _find(self, doc: JsonDoc) -> tuple[Member | None, Member | None]:
        if doc.root is None:
            return None, None
        container = self._member(doc.root, self.container, f"'{self.container}'")
        if container is None:
            return None, None
        return container, self._member(container.value, self.name, self.setting[:-4])

    def get(self, text: str) -> str | None:
        _, entry = self._find(self._doc(text))
        url = JsonDoc.member(entry.value, "url") if entry else None
        if url is None:
            return None
        return url.value.value if url.value.kind == "string" else None

    def header(self, text: str, name: str) -> str | None:
        """A header of the entry (an older register kept the instance id in one)."""
        _, entry = self._find(self._doc(text))
        headers = entry.value.python().get("headers") if entry else None
        value = headers.get(name) if isinstance(headers, dict) else None
        return value.strip() or None if isinstance(value, str) else None

    def notes(self, text: str) -> list[str]:
        _, entry = self._find(self._doc(text))
        if entry and entry.value.python().get("enabled") is False:
            return [f'{self.setting[:-4]} is disabled ("enabled": false) in {self.path}']
        return []

    def set(self, text: str, url: str) -> tuple[str, Change]:
        doc = self._doc(text)
        if doc.root is None:
            return self.fresh(url), Change("file")
        container, entry = self._find(doc)
        if container is None:
            new = doc.insert(doc.root, self.container, {self.name: self._new(url)})
            return new, Change("container")
        if entry is None:
            return doc.insert(container.value, self.name, self._new(url)), Change("entry")
        if problem := self.refuse(entry.value.python()):
            raise self.malformed(f"has {self.setting[:-4]}, which {problem}")
        text = self._tidy(doc, entry)
        doc = self._doc(text)
        _, entry = self._find(doc)
        assert entry is not None
        old = JsonDoc.member(entry.value, "url")
        if old is None:
            return doc.insert(entry.value, "url", url), Change("url")
        if old.value.kind != "string":
            raise self.malformed(f"{self.setting} is not a string")
        raw = text[old.value.start : old.value.end]
        return doc.replace(old.value, url), Change("", old.value.value, raw)

    def _tidy(self, doc: JsonDoc, entry: Member) -> str:
        """Drop the instance header an older register wrote (the URL names the instance now)."""
        headers = JsonDoc.member(entry.value, "headers")
        if headers is None or headers.value.kind != "object":
            return doc.text
        text = doc.text
        for name in self.drop_headers:
            doc = JsonDoc(text)
            _, entry_now = self._find(doc)
            assert entry_now is not None
            found = JsonDoc.member(entry_now.value, "headers")
            assert found is not None
            text = doc.delete(found.value, name)
        doc = JsonDoc(text)
        _, entry_now = self._find(doc)
        assert entry_now is not None
        found = JsonDoc.member(entry_now.value, "headers")
        if found is not None and not found.value.members and headers.value.members:
            text = doc.delete(entry_now.value, "headers")
        return text

    def unset(self, text: str, change: Change) -> str:
        doc = self._doc(text)
        container, entry = self._find(doc)
        if container is None or entry is None:
            return text
        if change.previous is not None:
            url = JsonDoc.member(entry.value, "url")
            if url is None:
                return text
            raw = change.raw or json.dumps(change.previous, ensure_ascii=False)
            return text[: url.value.start] + raw + text[url.value.end :]
        if change.added == "url":
            return doc.delete(entry.value, "url")
        text = doc.delete(container.value, self.name)
        doc = self._doc(text)
        container, _ = self._find(doc)
        if change.added in ("container", "file") and container and not container.value.members:
            assert doc.root is not None
            text = doc.delete(doc.root, self.container)
        return text

    def fresh(self, url: str) -> str:
        data = {self.container: {self.name: self._new(url)}}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    def is_empty(self, text: str) -> bool:
        doc = self._doc(text)
        return doc.root is None or (not doc.root.members and text.strip() == "{}")


@dataclass
class TomlKnob(KnobFile):
    """`[<container>.<name>]` `url = …` in a TOML file (Codex's config.toml)."""

    path: Path
    container: str
    name: str
    refuse: EntryCheck

    @property
    def setting(self) -> str:  # type: ignore[override]
        return f"[{self.container}.{self.name}] url"

    def _doc(self, text: str) -> tomlkit.TOMLDocument:
        try:
            return tomlkit.parse(text)
        except TOMLKitError as exc:
            raise self.malformed(f"is not valid TOML: {exc}") from None

    def _tables(self, doc: tomlkit.TOMLDocument) -> tuple[Any, Any]:
        container = doc.get(self.container)
        if container is None:
            return None, None
        if not isinstance(container, dict):
            raise self.malformed(f"'{self.container}' is not a table")
        entry = container.get(self.name)
        if entry is not None and not isinstance(entry, dict):
            raise self.malformed(f"{self.container}.{self.name} is not a table")
        return container, entry

    def get(self, text: str) -> str | None:
        _, entry = self._tables(self._doc(text))
        url = entry.get("url") if entry is not None else None
        return str(url) if isinstance(url, str) else None

    def notes(self, text: str) -> list[str]:
        _, entry = self._tables(self._doc(text))
        if entry is not None and entry.get("enabled") is False:
            return [f"[{self.container}.{self.name}] has enabled = false in {self.path}"]
        return []

    def set(self, text: str, url: str) -> tuple[str, Change]:
        doc = self._doc(text)
        container, entry = self._tables(doc)
        table = tomlkit.table()
        table["url"] = url
        if container is None:
            outer = tomlkit.table(is_super_table=True)
            outer[self.name] = table
            doc[self.container] = outer
            return doc.as_string(), Change("container")
        if entry is None:
            container[self.name] = table
            return doc.as_string(), Change("entry")
        if problem := self.refuse(entry.unwrap()):
            raise self.malformed(f"has [{self.container}.{self.name}], which {problem}")
        old = entry.get("url")
        if old is None:
            entry["url"] = url
            return doc.as_string(), Change("url")
        if not isinstance(old, str):
            raise self.malformed(f"{self.container}.{self.name}.url is not a string")
        raw = old.as_string() if hasattr(old, "as_string") else json.dumps(str(old))
        entry["url"] = url
        return doc.as_string(), Change("", str(old), raw)

    def unset(self, text: str, change: Change) -> str:
        doc = self._doc(text)
        container, entry = self._tables(doc)
        if container is None or entry is None:
            return text
        if change.previous is not None:
            if change.raw is None:
                entry["url"] = change.previous
            else:
                entry["url"] = tomlkit.parse(f"v = {change.raw}")["v"]
        elif change.added == "url":
            entry.pop("url", None)
        else:
            del container[self.name]
            if change.added in ("container", "file") and not container:
                del doc[self.container]
        return doc.as_string()

    def fresh(self, url: str) -> str:
        return self.set("", url)[0]

    def is_empty(self, text: str) -> bool:
        return not self._doc(text)
