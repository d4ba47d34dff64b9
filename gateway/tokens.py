"""The gateway's two bearer tokens: where each comes from, and the files that hold them.

- The **admin token** opens listing, showing, changing and deleting instances, `/metrics`,
  the details of `/gateway/status` and `/gateway/probe`. From `POWERMEM_GATEWAY_ADMIN_TOKEN`,
  else the file named by `POWERMEM_GATEWAY_ADMIN_TOKEN_FILE`, else `<data dir>/admin.token`,
  generated on first start: the gateway is closed by default, and the CLI on the same machine
  (same user, same data dir) reads the token from there.
- The **relay token** is the only credential powermem holds: good for the relay and nothing
  else. Same order: `POWERMEM_GATEWAY_RELAY_TOKEN`, `…_RELAY_TOKEN_FILE`, `<data dir>/relay.token`.

Generated files are 0600; one with a looser mode is made 0600 at start (with a warning), and
one owned by another user is refused. A `_FILE` the operator points at (a container secret)
is read as it is: its mode is the operator's business.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.errors import GatewayError
from gateway.files import ensure_private_dir, ensure_private_file, write_private_file_once
from gateway.settings import Settings

__all__ = [
    "ADMIN_TOKEN_FILE",
    "RELAY_TOKEN_FILE",
    "TokenError",
    "load_admin_token",
    "load_relay_token",
    "read_admin_token",
]

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret
RELAY_TOKEN_FILE = "relay.token"  # noqa: S105 - a file name, not a secret
MIN_TOKEN_LEN = 16


class TokenError(GatewayError):
    """A token is configured in a way the gateway cannot use; the message says how to fix it."""

    code = "SYSTEM_CONFIG_ERROR"


def _from_file(path: Path, variable: str) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"{variable}={path}: cannot read it ({type(exc).__name__}).") from None
    if not token:
        raise TokenError(f"{variable}={path}: that file is empty.")
    return token


def _configured(value: str | None, file: Path | None, name: str) -> str | None:
    # The settings read a `_FILE` variable into the value already (and refuse both at once);
    # a file without a value is a Settings made by hand, so it is read here.
    if value:
        return value
    if file is not None:
        return _from_file(file, f"POWERMEM_GATEWAY_{name}_FILE")
    return None


def _data_dir_token(path: Path, prefix: str, *, create: bool) -> str | None:
    # A loose mode is fixed (with a warning); a file that is not ours is refused (NotOurs).
    ensure_private_file(path, "token")
    if not create and not path.exists():
        return None
    if create:
        ensure_private_dir(path.parent)
        token = write_private_file_once(path, f"{prefix}{secrets.token_urlsafe(32)}\n").strip()
    else:
        token = path.read_text(encoding="utf-8").strip()
    if len(token) < MIN_TOKEN_LEN:
        raise TokenError(
            f"{path} holds no usable token: remove it and the gateway makes a new one."
        )
    return token


def load_admin_token(settings: Settings) -> str:
    """The admin token; generated into the data dir on first start when none is configured."""
    configured = _configured(settings.admin_token, settings.admin_token_file, "ADMIN_TOKEN")
    if configured is not None:
        return configured
    token = _data_dir_token(settings.data_dir / ADMIN_TOKEN_FILE, "pga-", create=True)
    assert token is not None
    return token


def read_admin_token(settings: Settings) -> str | None:
    """What the CLI sends: the configured token, else the data dir's, else None (never made)."""
    configured = _configured(settings.admin_token, settings.admin_token_file, "ADMIN_TOKEN")
    if configured is not None:
        return configured
    return _data_dir_token(settings.data_dir / ADMIN_TOKEN_FILE, "pga-", create=False)


def load_relay_token(settings: Settings) -> str:
    """The relay token; generated into the data dir on first start when none is configured."""
    configured = _configured(settings.relay_token, settings.relay_token_file, "RELAY_TOKEN")
    if configured is not None:
        return configured
    token = _data_dir_token(settings.data_dir / RELAY_TOKEN_FILE, "pgr-", create=True)
    assert token is not None
    return token
