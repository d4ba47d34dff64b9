"""The relay token: the only key powermem holds, good for nothing but our own relay."""

from __future__ import annotations

import secrets

from gateway.errors import StorageError
from gateway.files import ensure_private_dir, write_private_file_once
from gateway.settings import Settings

__all__ = ["RELAY_TOKEN_FILE", "load_relay_token"]

RELAY_TOKEN_FILE = "relay.token"  # noqa: S105 - a file name, not a secret


def load_relay_token(settings: Settings) -> str:
    """POWERMEM_GATEWAY_RELAY_TOKEN when given, else the data dir's token file (made once).

    Replicas on one shared registry must all accept the token powermem holds, whichever of
    them its call reaches: there it must be given, never generated per data dir.
    """
    if settings.relay_token:
        return settings.relay_token
    if settings.database_url:
        raise StorageError(
            "With --database-url every replica must share the relay token: set "
            "POWERMEM_GATEWAY_RELAY_TOKEN (or POWERMEM_GATEWAY_RELAY_TOKEN_FILE) to the same "
            "value on every replica and in powermem's LLM_API_KEY."
        )
    path = ensure_private_dir(settings.data_dir) / RELAY_TOKEN_FILE
    return write_private_file_once(path, f"pgr-{secrets.token_urlsafe(32)}\n").strip()
