"""What can go wrong while setting up a coding tool, each with a message that says what to do."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClientSetupError",
    "ConfigFileError",
    "GatewayRefused",
    "GatewayUnreachable",
    "MissingSetting",
]


class ClientSetupError(Exception):
    """Base of every error `register`, `unregister` and `doctor` report to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GatewayUnreachable(ClientSetupError):
    """Nothing answered at the gateway URL, or it answered something that is not the gateway."""


class GatewayRefused(ClientSetupError):
    """The gateway answered with an error envelope."""

    def __init__(
        self, message: str, *, status: int, code: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}


class MissingSetting(ClientSetupError):
    """A provider, model or key is neither given as a flag nor found in the tool's own config."""


class ConfigFileError(ClientSetupError):
    """A tool's config file cannot be read or safely changed; it was left untouched."""
