"""Fail when the gateway's import graph has a cycle or a package imports what it may not.

Every import counts: at module level, inside functions and under `if TYPE_CHECKING:`, because
each one is a dependency a reader has to hold in mind. Each package declares in its
`__init__` docstring, on a line starting `May import:`, which other parts of `gateway` it
depends on; `gateway (top-level modules)` means the foundation modules beside the packages
(errors, settings, files, providers). The command line (`gateway.cli…`, `gateway.__main__`)
is the entry point and may import anything.

    python scripts/check_imports.py        # exit 1 and a list of problems, or silence
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"
ENTRY_POINTS = ("gateway.cli", "gateway.__main__")


def _is_entry_point(module: str) -> bool:
    """`gateway.cli` and its submodules, `gateway.__main__`; not `gateway.clients`."""
    return any(module == e or module.startswith(e + ".") for e in ENTRY_POINTS)


_MAY_IMPORT = re.compile(r"^May import:\s*(?P<parts>.*?)\.?\s*$", re.MULTILINE)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The gateway modules `path` imports (a `from pkg import name` names a module if it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gateway")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "gateway":
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {m for m in found if m in known}


def part_of(module: str) -> str:
    """`gateway.instances.store` → `instances`; top-level modules → `gateway`."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "gateway"


def declared(package: str) -> set[str] | None:
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
    match = _MAY_IMPORT.search(doc)
    if match is None:
        return None
    allowed = {package}
    for item in match.group("parts").split(","):
        name = item.strip().split(" ")[0]
        if name:
            allowed.add(name)
    return allowed


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def problems() -> list[str]:
    known = modules()
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}
    # A package's __init__ re-exporting its own modules is not a dependency between modules.
    for name in graph:
        if (PACKAGE / name.split(".", 1)[-1].replace(".", "/") / "__init__.py").exists():
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    found = [f"import cycle: {' → '.join(c)}" for c in cycles(graph)]
    rules: dict[str, set[str] | None] = {}
    for name, targets in sorted(graph.items()):
        if _is_entry_point(name):
            continue
        source = part_of(name)
        if source == "gateway":
            allowed: set[str] | None = {"gateway"}
        else:
            if source not in rules:
                rules[source] = declared(source)
            allowed = rules[source]
            if allowed is None:
                found.append(f"gateway/{source}/__init__.py: no 'May import:' line")
                continue
        for target in sorted(targets):
            if _is_entry_point(target) or part_of(target) not in allowed:
                found.append(f"{name} imports {target}: not in what {source} may import")
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
