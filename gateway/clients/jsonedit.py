"""Surgical edits of JSON and JSONC files: change one value, add or drop one member, and leave
every other byte (comments, trailing commas, indentation, key order, escapes) as it was.

Cursor's `mcp.json` and OpenCode's `opencode.json(c)` are files people write by hand; loading
and dumping them would reflow their formatting and lose their comments. Here the file is
parsed once into nodes that remember where they start and end, and an edit is a splice of
the text. Inserted members follow the file's own style (indentation, one line or many,
trailing commas); dropping a member that was inserted gives back the text from before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JsonDoc", "JsonEditError", "Member", "Node"]

MAX_DEPTH = 200
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_SPACE = " \t\r\n"
_DECODER = json.JSONDecoder()  # strings only: it reads one "…" at a position, escapes and all


class JsonEditError(ValueError):
    """The text is not JSON (or JSONC), or an edit is impossible; `where` is (line, column)."""

    def __init__(self, message: str, where: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where


@dataclass
class Node:
    start: int
    end: int
    kind: str  # object, array, string, number, literal
    value: Any = None
    members: list[Member] = field(default_factory=list)
    items: list[Node] = field(default_factory=list)

    def python(self) -> Any:
        if self.kind == "object":
            return {m.key: m.value.python() for m in self.members}
        if self.kind == "array":
            return [item.python() for item in self.items]
        return self.value


@dataclass
class Member:
    key: str
    key_start: int
    value: Node
    comma: int | None = None  # where the comma after this member is, if there is one


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str, pos: int | None = None) -> JsonEditError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return JsonEditError(what, (line, column))

    def skip(self) -> None:
        """Whitespace and comments (`//` to the end of the line, `/* … */`)."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in _SPACE:
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def value(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail("nested too deeply")
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("unexpected end of file")
        char, start = self.text[self.pos], self.pos
        if char == "{":
            return self.container(depth, "}", start)
        if char == "[":
            return self.container(depth, "]", start)
        if char == '"':
            value = self.string()
            return Node(start, self.pos, "string", value)
        if number := _NUMBER.match(self.text, self.pos):
            self.pos = number.end()
            return Node(start, self.pos, "number", json.loads(number.group()))
        for word, meaning in _LITERALS.items():
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return Node(start, self.pos, "literal", meaning)
        raise self.fail(f"unexpected {char!r}")

    def string(self) -> str:
        try:
            value, self.pos = _DECODER.raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            raise self.fail(exc.msg, exc.pos) from None
        return str(value)

    def container(self, depth: int, close: str, start: int) -> Node:
        node = Node(start, start, "object" if close == "}" else "array")
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith(close, self.pos):
                break
            if node.kind == "object":
                if not self.text.startswith('"', self.pos):
                    raise self.fail("expected a quoted key")
                key_start = self.pos
                key = self.string()
                self.skip()
                if not self.text.startswith(":", self.pos):
                    raise self.fail("expected ':'")
                self.pos += 1
                node.members.append(Member(key, key_start, self.value(depth + 1)))
            else:
                node.items.append(self.value(depth + 1))
            self.skip()
            if self.text.startswith(",", self.pos):
                if node.kind == "object":
                    node.members[-1].comma = self.pos
                self.pos += 1
            elif not self.text.startswith(close, self.pos):
                raise self.fail(f"expected ',' or '{close}'")
        self.pos += 1
        node.end = self.pos
        return node


def _indent_unit(text: str) -> str:
    """The file's indentation step: a tab, or the width of its first indented line (else 2)."""
    match = re.search(r"\n([ \t]+)\S", text)
    if not match:
        return "  "
    lead = match.group(1)
    return "\t" if lead.startswith("\t") else lead


class JsonDoc:
    """One parsed JSON(C) text; each edit returns the new text (parse it again to go on)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root: Node | None = None
        if text.strip():
            parser = _Parser(text)
            self.root = parser.value(0)
            parser.skip()
            if parser.pos != len(text):
                raise parser.fail("unexpected text after the JSON value")

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def member(obj: Node, key: str) -> Member | None:
        found = [m for m in obj.members if m.key == key]
        if len(found) > 1:
            raise JsonEditError(f"the key {key!r} appears {len(found)} times in one object")
        return found[0] if found else None

    # -- editing ---------------------------------------------------------------------------

    def _multiline(self) -> bool:
        return "\n" in self.text.strip()

    def render(self, value: Any, indent: str) -> str:
        """`value` as JSON in this file's style, for a member indented by `indent`."""
        if not self._multiline():
            return json.dumps(value, ensure_ascii=False)
        unit = _indent_unit(self.text)
        return json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", "\n" + indent)

    def replace(self, node: Node, value: Any) -> str:
        return (
            self.text[: node.start] + json.dumps(value, ensure_ascii=False) + self.text[node.end :]
        )

    def _line_indent(self, pos: int) -> str:
        line_start = self.text.rfind("\n", 0, pos) + 1
        line = self.text[line_start:pos]
        return line[: len(line) - len(line.lstrip(" \t"))]

    def insert(self, obj: Node, key: str, value: Any) -> str:
        """`obj` with `key: value` added after its last member."""
        text = self.text
        if obj.members:
            last = obj.members[-1]
            before = last.key_start
            while before > 0 and text[before - 1] in " \t":
                before -= 1
            multiline = before > 0 and text[before - 1] == "\n"
            indent = text[before : last.key_start] if multiline else ""
            sep = "\n" + indent if multiline else " "
            member = f"{json.dumps(key, ensure_ascii=False)}: {self.render(value, indent)}"
            if last.comma is not None:  # JSONC with trailing commas: keep them
                pos = last.comma + 1
                return text[:pos] + sep + member + "," + text[pos:]
            pos = last.value.end
            return text[:pos] + "," + sep + member + text[pos:]
        outer = self._line_indent(obj.start)
        close = obj.end - 1
        stop = close
        while stop > obj.start + 1 and text[stop - 1] in _SPACE:
            stop -= 1
        if self._multiline() or not text.strip():
            indent = outer + _indent_unit(text)
            member = f"{json.dumps(key, ensure_ascii=False)}: {self.render(value, indent)}"
            return text[:stop] + "\n" + indent + member + "\n" + outer + text[close:]
        member = f"{json.dumps(key, ensure_ascii=False)}: {self.render(value, '')}"
        return text[:stop] + member + text[close:]

    def delete(self, obj: Node, key: str) -> str:
        """`obj` without `key`; the exact inverse of `insert` for a member it added."""
        text = self.text
        found = self.member(obj, key)
        if found is None:
            return text
        index = obj.members.index(found)
        end = found.comma + 1 if found.comma is not None else found.value.end
        if len(obj.members) == 1:
            start = found.key_start
            while start > obj.start + 1 and text[start - 1] in _SPACE:
                start -= 1
            inner = text[obj.start + 1 : start] + text[end : obj.end - 1]
            if not inner.strip():
                return text[: obj.start + 1] + text[obj.end - 1 :]
            return text[:start] + text[end:]
        if index == len(obj.members) - 1:
            previous = obj.members[index - 1]
            if found.comma is not None and previous.comma is not None:
                return text[: previous.comma + 1] + text[end:]
            return text[: previous.value.end] + text[found.value.end :]
        # A member in the middle: its whole line(s) go when it stands on lines of its own.
        start = found.key_start
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        own_line = start == 0 or text[start - 1] == "\n"
        stop = end
        while stop < len(text) and text[stop] in " \t":
            stop += 1
        if own_line and stop < len(text) and text[stop] == "\n":
            return text[:start] + text[stop + 1 :]
        return text[: found.key_start] + text[stop:]
