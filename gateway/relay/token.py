"""The relay token: the only key powermem holds, good for nothing but our own relay."""

from __future__ import annotations

import secrets

from gateway.files import ensure_private_dir, write_private_file_once
from gateway.settings import Settings

__all__ = ["RELAY_TOKEN_FILE", "load_relay_token"]

RELAY_TOKEN_FILE = "relay.token"  # noqa: S105 - a file name, not a secret


def load_relay_token(settings: Settings) -> str:
    """POWERMEM_GATEWAY_RELAY_TOKEN when given, else the data dir's token file (made once)."""
    if settings.relay_token:
        return settings.relay_token
    path = ensure_private_dir(settings.data_dir) / RELAY_TOKEN_FILE
    return write_private_file_once(path, f"pgr-{secrets.token_urlsafe(32)}\n").strip()
