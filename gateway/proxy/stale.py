"""The managed powermem's pid file: find and stop a child an earlier gateway left behind.

A gateway that was killed before it could stop its powermem (a power cut, SIGKILL of a
launcher, a crash on another OS) may leave one running on the same database. The pid file in
the data dir names the child's process group and its leader's start time, so the next
gateway stops exactly that group, never an unrelated process that reused the number.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path

from gateway.files import write_private_file

__all__ = ["PID_FILE", "forget", "group_members", "process_start", "record", "stop_stale"]

log = logging.getLogger(__name__)

PID_FILE = "upstream.pid"
# What a process of a managed powermem group runs (the launcher, the instrumenter, the server).
_OURS = ("gateway.proxy.lifeline", "opentelemetry-instrument", "powermem-server", "powermem")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Every live (not zombie) process whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        # Zombies are dead already; their parent (or init) reaps them.
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def record(data_dir: Path, pgid: int) -> None:
    """Remember the group of the child just started."""
    text = json.dumps({"pgid": pgid, "start": process_start(pgid), "gateway": os.getpid()})
    write_private_file(data_dir / PID_FILE, text + "\n")


def forget(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / PID_FILE).unlink()


def _is_ours(pgid: int, start: object, members: list[int]) -> bool:
    if pgid in members:
        # The leader still runs: it must be the very process we started.
        return process_start(pgid) == start
    return all(any(mark in _cmdline(pid) for mark in _OURS) for pid in members)


def stop_stale(data_dir: Path, *, timeout: float = 10.0) -> int | None:
    """Stop the group named by the pid file if it still runs; its pgid, or None."""
    try:
        info = json.loads((data_dir / PID_FILE).read_text(encoding="utf-8"))
        pgid = int(info["pgid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable %s", data_dir / PID_FILE)
        forget(data_dir)
        return None
    members = group_members(pgid)
    if not members or not _is_ours(pgid, info.get("start"), members):
        forget(data_dir)
        return None
    log.warning(
        "stopping the powermem server an earlier gateway left running (process group %d)", pgid
    )
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not group_members(pgid):
            break
    forget(data_dir)
    return pgid
