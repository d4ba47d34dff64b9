"""Private files in the data dir: 0700 folders, 0600 files, written atomically."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

from gateway.errors import StorageError

__all__ = [
    "NotOurs",
    "ensure_private_dir",
    "ensure_private_file",
    "write_private_file",
    "write_private_file_once",
]

log = logging.getLogger("gateway.files")


class NotOurs(StorageError):
    """A data-dir file or folder belongs to another user, or is a symlink: we will not use it."""


def _check_owner(path: Path, st: os.stat_result, what: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise NotOurs(
            f"{path} is a symbolic link; the gateway keeps its {what} "
            "only in real files. Replace the link with the file it points to."
        )
    if st.st_uid != os.geteuid():
        raise NotOurs(
            f"{path} belongs to user id {st.st_uid}, not to the gateway's user "
            f"({os.geteuid()}); it holds the gateway's {what}, so it will not be trusted. "
            "Run the gateway as that user, or chown the file to the gateway's user."
        )


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _check_owner(path, path.lstat(), "data")
    os.chmod(path, 0o700)
    return path


def ensure_private_file(path: Path, what: str = "secrets") -> bool:
    """Make an existing data-dir file 0600 (True if its mode was loose); refuse one not ours.

    A key or registry file left group- or world-readable (restored from a backup, copied with
    a loose umask) is fixed at start, with one warning; a file owned by someone else, or a
    symlink, is refused with `NotOurs`, since whoever owns it can change what it says.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    _check_owner(path, st, what)
    if not stat.S_ISREG(st.st_mode):
        return False  # not a file at all: whoever opens it says so (a directory, a socket…)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was readable by other users; its mode is now 0600", path.name)
        return True
    return False


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
