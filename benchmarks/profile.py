"""Hot-path profiles: py-spy samples a gateway under wrk load; the stacks become a text summary.

py-spy (a sampling profiler that reads the target's memory; the gateway runs unmodified)
records collapsed stacks for a few seconds while wrk drives one request shape. Idle samples
(the event loop waiting in epoll) are left out, so percentages are shares of the CPU the
gateway's Python threads actually used. Sampling costs the gateway a little time, which is
why profiles run after the measured repetitions, never during them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import Counter
from pathlib import Path

from benchmarks.context import Context
from benchmarks.wrk import Load, run_wrk

__all__ = ["profile", "summarise"]

RATE = 250
TOP = 18
# Frames every stack passes through on its way to the event loop: not the request path.
_OUTER = (
    "<frozen runpy>",
    "click/",
    "gateway/cli/",
    "gateway/__main__.py",
    "gateway/process/",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
)
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def profile(
    ctx: Context, name: str, pid: int, url: str, load: Load, connections: int
) -> str | None:
    """Profile `pid` (and its subprocesses) while wrk drives `load`; the summary, also written
    to the results folder as profile-<name>.txt (and the raw stacks as .collapsed)."""
    if not ctx.profile or ctx.out is None:
        return None
    seconds = max(3, round(ctx.seconds * 1.5))
    raw = ctx.out / f"profile-{name}.collapsed"
    argv = [
        shutil.which("py-spy") or "py-spy",
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--function",
        "--nonblocking",
        "--format",
        "raw",
        "--rate",
        str(RATE),
        "--duration",
        str(seconds),
        "--output",
        str(raw),
    ]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # wrk in a thread, so py-spy's whole window sees load.
    worker = threading.Thread(
        target=run_wrk,
        args=(url, load),
        kwargs={"connections": connections, "seconds": seconds + 1, "warmup": 0},
        daemon=True,
    )
    worker.start()
    _, err = spy.communicate(timeout=seconds + 60)
    worker.join()
    if spy.returncode != 0 or not raw.exists():
        print(f"  ! py-spy failed for {name}: {err.strip()[-300:]}")
        return None
    summary = summarise(raw.read_text(), title=f"{name}: {load.method} {load.path} c={connections}")
    (ctx.out / f"profile-{name}.txt").write_text(summary)
    ctx.extra.setdefault("profiles", {})[name] = str(raw.with_suffix(".txt"))
    return summary


def _function(frame: str) -> str:
    """`handle (gateway/front/proxy.py:84)` → `handle (gateway/front/proxy.py)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['name']} ({_short(match['file'])})"


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path.removeprefix("/").split("/", 1)[1] if path.startswith(".") else path


def _area(frame: str) -> str:
    """Which layer a frame belongs to: gateway/front, aiohttp, asyncio, …"""
    match = _FRAME.match(frame.strip())
    path = _short(match["file"]) if match else frame
    if path.startswith("gateway/"):
        return "/".join(path.split("/")[:2]).removesuffix(".py")
    first = re.split(r"[/.]", path, maxsplit=1)[0]
    return first or path


def _is_outer(function: str) -> bool:
    return any(f"({marker}" in function for marker in _OUTER)


def summarise(collapsed: str, *, title: str) -> str:
    """Self and inclusive shares per function, and self shares per layer, from collapsed
    stacks (`a;b;c <count>` per line)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        own[_function(leaf)] += count
        areas[_area(leaf)] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return f"{title}\n  (no samples)\n"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    out = [title, f"  {total} samples at {RATE}/s of busy Python threads", ""]
    out.append("  self time by layer (where the CPU is spent):")
    out += [f"    {pct(n)}  {name}" for name, n in areas.most_common(TOP)]
    out.append("")
    out.append("  self time by function:")
    out += [f"    {pct(n)}  {name}" for name, n in own.most_common(TOP)]
    out.append("")
    out.append("  inclusive time by function (the request path, outermost first):")
    path = [(name, n) for name, n in inclusive.most_common() if not _is_outer(name)]
    out += [f"    {pct(n)}  {name}" for name, n in path[: TOP + 6]]
    return "\n".join(out) + "\n"


def combined(ctx: Context) -> Path | None:
    """All profile summaries of this run in one file (profile.txt)."""
    if ctx.out is None:
        return None
    parts = sorted(ctx.out.glob("profile-*.txt"))
    if not parts:
        return None
    target = ctx.out / "profile.txt"
    target.write_text("\n".join(p.read_text() for p in parts))
    return target
