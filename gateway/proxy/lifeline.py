"""Run a command that must die with the gateway, however the gateway dies.

    python -m gateway.proxy.lifeline FD [STOP_TIMEOUT] -- COMMAND [ARGS…]

The gateway starts this launcher as the leader of a new process group, keeping the write end
of a pipe whose read end is FD. The launcher runs COMMAND in its own group and waits. When the
pipe reaches end-of-file (the gateway exited, was killed with SIGKILL, crashed: the kernel
closes its end in every case) it sends SIGTERM to the whole group (powermem and any uvicorn
workers it forked), waits up to STOP_TIMEOUT seconds, then SIGKILL. When COMMAND exits first,
the launcher exits with its code. SIGTERM to the launcher itself (the gateway's normal stop
signals the group) just waits for COMMAND to finish.

Standard library only, and nothing from the gateway: this process should cost little.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

__all__ = ["main"]

_POLL = 0.2


def _signal_group(sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgrp(), sig)


def _ignore(signum: int, frame: object) -> None:
    """Stay alive to reap the child; it got the same signal."""


def _orphaned(fd: int) -> bool:
    readable, _, _ = select.select([fd], [], [], _POLL)
    if not readable:
        return False
    try:
        return os.read(fd, 64) == b""
    except OSError:
        return True


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") < 1:
        sys.stderr.write(__doc__ or "")
        return 2
    split = argv.index("--")
    fd = int(argv[0])
    stop_timeout = float(argv[1]) if split > 1 else 10.0
    command = argv[split + 1 :]
    # What powermem writes (its database, logs) is for the gateway's user alone. Set here, not
    # with `create_subprocess_exec(umask=…)`, which uvloop does not accept.
    os.umask(0o077)
    # The group is signalled as a whole; the launcher outlives the signal to reap the child.
    # A Python handler, not SIG_IGN: handlers are reset by exec, ignored signals would not be.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    try:
        child = subprocess.Popen(command)  # noqa: S603 - the gateway's own command line
    except OSError as exc:
        sys.stderr.write(f"cannot run {command[0]!r}: {exc.strerror}\n")
        return 127
    while child.poll() is None:
        if _orphaned(fd):
            _signal_group(signal.SIGTERM)
            deadline = time.monotonic() + stop_timeout
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(_POLL)
            _signal_group(signal.SIGKILL)  # the launcher included: nothing is left to wait for
            return 1
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
