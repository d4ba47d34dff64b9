"""Private files in the data dir: 0700 folders, 0600 files, written atomically, checked at start."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "NotOurFile",
    "ensure_private_dir",
    "secure_file",
    "write_private_file",
    "write_private_file_once",
]

log = logging.getLogger("gateway.files")


class NotOurFile(Exception):
    """A secret file in the data dir belongs to another user (or is not a regular file)."""


def secure_file(path: Path) -> bool:
    """Make an existing secret file 0600, refusing one that is not ours; True if it was loose.

    A token or key file someone else owns could have been planted or read by them: we do not
    use it, and we do not quietly take it over either (the message names the way out).
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise NotOurFile(f"{path} is not a regular file; remove it and start again.")
    if info.st_uid != os.getuid():
        raise NotOurFile(
            f"{path} belongs to user id {info.st_uid}, not to the gateway's user "
            f"({os.getuid()}): remove it, or run the gateway as its owner."
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning(
            "%s was readable by others (mode %o); made it 0600.", path, info.st_mode & 0o777
        )
        return True
    return False


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _private_temp(path: Path, text: str) -> str:
    """A fully written, fsynced 0600 temporary file beside `path`; returns its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_private_file(path: Path, text: str) -> None:
    """Replace `path` atomically: a reader sees the old content or the new, never a mix."""
    tmp = _private_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_private_file_once(path: Path, text: str) -> str:
    """Create `path` with `text` unless it exists; return what the file holds.

    Several gateway processes may start on one data dir at once: the file is written to a
    temporary name and hard-linked into place, so exactly one writer wins and nobody ever
    reads a half-written file.
    """
    if not path.exists():
        tmp = _private_temp(path, text)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text(encoding="utf-8")
