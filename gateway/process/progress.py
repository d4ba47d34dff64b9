"""What `serve` tells the person who started it: a live line on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import shutil
import sys
from typing import TextIO

__all__ = ["Console"]

log = logging.getLogger("gateway.serve")

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_EVERY = 5.0  # seconds between progress log lines when not on a terminal


class Console:
    """`say` for facts, `shout` for problems, `progress` for a running wait."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.tty = self._stream.isatty()
        self._ticks = 0
        self._live = False
        self._last_logged = 0.0

    def _clear(self) -> None:
        if self._live:
            self._stream.write("\r\x1b[2K")
            self._live = False

    def say(self, message: str) -> None:
        self._clear()
        if self.tty:
            self._stream.write(f"powermem-gateway: {message}\n")
            self._stream.flush()
        else:
            log.info(message)

    def shout(self, message: str) -> None:
        """A problem the operator must see: on a terminal and in the log, always."""
        self._clear()
        if self.tty:
            self._stream.write(f"\x1b[1;31mpowermem-gateway: {message}\x1b[0m\n")
            self._stream.flush()
        log.error(message)

    def progress(self, what: str, elapsed: float, detail: str) -> None:
        if not self.tty:
            if elapsed - self._last_logged >= _EVERY:
                self._last_logged = elapsed
                log.info("%s (%.0fs)%s", what, elapsed, f": {detail}" if detail else "")
            return
        self._ticks += 1
        width = shutil.get_terminal_size((100, 20)).columns
        line = f"{_SPINNER[self._ticks % len(_SPINNER)]} {what} {elapsed:4.1f}s"
        if detail:
            line += f" · {detail}"
        self._stream.write("\r\x1b[2K" + line[: max(10, width - 1)])
        self._stream.flush()
        self._live = True

    def done(self) -> None:
        self._clear()
        self._last_logged = 0.0
