"""The admin token the client commands send: where the gateway's own admin token is found.

`POWERMEM_GATEWAY_ADMIN_TOKEN`, else the file `POWERMEM_GATEWAY_ADMIN_TOKEN_FILE` names (a
container secret), else `<data dir>/admin.token`, the token a gateway closed by default writes
for the local CLI (the same order as the gateway's `load_admin_token`; a token file is never
created here). None when there is none: the gateway then answers 401 where it needs one, and
the commands say which variable to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.clients.errors import ClientSetupError, ConfigFileError
from gateway.clients.safefile import read_config
from gateway.settings import default_data_dir

__all__ = ["ADMIN_TOKEN_FILE", "admin_token"]

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name, not a secret
_VARIABLE = "POWERMEM_GATEWAY_ADMIN_TOKEN"


def admin_token(environ: Mapping[str, str], data_dir: str | Path | None = None) -> str | None:
    """The admin token to send, or None; `data_dir` defaults to POWERMEM_GATEWAY_DATA_DIR."""
    value = environ.get(_VARIABLE, "").strip()
    file = environ.get(f"{_VARIABLE}_FILE", "").strip()
    if value and file:
        raise ClientSetupError(f"Set {_VARIABLE} or {_VARIABLE}_FILE, not both.")
    if value:
        return value
    if file:
        try:
            token = Path(file).expanduser().read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientSetupError(
                f"{_VARIABLE}_FILE={file}: cannot read it ({type(exc).__name__})."
            ) from None
        if not token:
            raise ClientSetupError(f"{_VARIABLE}_FILE={file}: that file is empty.")
        return token
    folder = data_dir or environ.get("POWERMEM_GATEWAY_DATA_DIR", "").strip()
    path = (Path(folder).expanduser() if folder else default_data_dir()) / ADMIN_TOKEN_FILE
    try:
        text = read_config(path)
    except ConfigFileError:
        return None  # a link or a stranger's file: not a token to send anywhere
    return (text.strip() or None) if text else None
