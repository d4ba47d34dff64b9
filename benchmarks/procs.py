"""Processes under test: start, wait until they answer, stop; their CPU time and memory.

CPU and memory are read from /proc over a whole process tree (the gateway's supervisor and
its workers; nginx's master and worker), because a figure for one process of a
multi-process server would hide most of its cost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

__all__ = [
    "CpuMeter",
    "Proc",
    "ProcessTree",
    "RssSampler",
    "clean_environ",
    "free_port",
    "machine_busy_seconds",
    "require_tools",
    "rss_mb",
    "tool",
]

INSTALL_HINT = (
    "The benchmarks need wrk (load generator) and nginx (fast upstream and reference proxy).\n"
    "On Debian/Ubuntu: sudo apt-get install -y wrk nginx    (macOS: brew install wrk nginx)"
)
_TICK = os.sysconf("SC_CLK_TCK")


def require_tools() -> None:
    """Exit with a clear message when wrk or nginx is missing."""
    missing = [name for name in ("wrk", "nginx") if _which(name) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}\n{INSTALL_HINT}")


def _which(name: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def tool(name: str) -> str:
    path = _which(name)
    if path is None:
        sys.exit(f"missing: {name}\n{INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without any powermem setting of the person running the
    benchmark (their POWERMEM_* variables would silently change what is measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POWERMEM")}
    env.update(extra)
    return env


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _TICK


def _stat(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def rss_mb(pid: int) -> float:
    """Resident set size of one process (VmRSS), in MiB; 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


class ProcessTree:
    """A process and its descendants, found afresh on every read (workers may restart).

    `exclude` drops a descendant (and everything under it) by its command line: the managed
    powermem is a child of the gateway, but its CPU is powermem's, not the gateway's.
    """

    def __init__(self, pid: int, exclude: Callable[[str], bool] | None = None) -> None:
        self.pid = pid
        self._exclude = exclude

    def pids(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
        found = {self.pid}
        todo = [self.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                if self._exclude is not None and self._exclude(_cmdline(child)):
                    continue
                found.add(child)
                todo.append(child)
        return found

    def cpu_seconds(self, pids: set[int] | None = None) -> float:
        """utime + stime of every process of the tree (its threads included)."""
        ticks = 0
        for pid in pids if pids is not None else self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = _stat(pid)
                ticks += int(fields[11]) + int(fields[12])
        return ticks / _TICK

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())


class CpuMeter:
    """A tree's CPU from now on: `cores()` is CPU seconds per wall second since the start."""

    def __init__(self, tree: ProcessTree) -> None:
        self.tree = tree
        self.pids = tree.pids()
        self.started = time.monotonic()
        self.before = tree.cpu_seconds(self.pids)

    def seconds(self) -> float:
        return self.tree.cpu_seconds(self.pids) - self.before

    def cores(self) -> float:
        wall = time.monotonic() - self.started
        return self.seconds() / wall if wall > 0 else 0.0


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env if env is not None else clean_environ(),
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self, exclude: Callable[[str], bool] | None = None) -> ProcessTree:
        return ProcessTree(self.pid, exclude)

    def wait_http(self, url: str, timeout: float = 30.0, *, ok_only: bool = False) -> None:
        """Block until `url` answers (any status, or 2xx with `ok_only`), else fail with the
        process's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                    return
            except urllib.error.HTTPError:
                if not ok_only:
                    return
                time.sleep(0.2)
            except OSError:
                time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not come up at {url}:\n{tail}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


class RssSampler:
    """Samples a process tree's RSS in a background thread; `peak` is the highest seen."""

    def __init__(self, tree: ProcessTree, interval: float = 0.2) -> None:
        self.tree = tree
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.tree.rss_mb())
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
