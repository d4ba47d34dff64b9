"""Private files in the data dir: 0700 folders, 0600 files, written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["ensure_private_dir", "write_private_file", "write_private_file_once"]


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
