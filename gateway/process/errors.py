"""Why `serve` cannot start: each a one-line message that says what to do."""

from __future__ import annotations

__all__ = ["ServeError"]


class ServeError(Exception):
    """`serve` cannot start (port taken, data dir in use, unusable settings…)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
