"""Reading and writing a tool's own config file without being turned against another file.

A tool's config lives in the user's home or project, where a symbolic link or a file owned
by someone else may wait: `~/.cursor/mcp.json -> ~/.bashrc`, or a project's `.cursor/mcp.json`
planted by whoever owns the checkout. `register` writes an instance secret into these files,
so it never writes through a link (it would replace the target's content, or leak the secret
into it) and never takes over a file another user owns. Writes are atomic (a temporary file
beside it, then a rename that replaces the name, never a link's target) and leave mode 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from gateway.clients.errors import ConfigFileError
from gateway.files import write_private_file

__all__ = ["MAX_CONFIG_BYTES", "read_config", "remove_config", "same_text", "write_config"]

# Tool config files are small; anything larger is not one (or is a trap: /dev/zero).
MAX_CONFIG_BYTES = 4 * 1024 * 1024


def _refuse_if_not_ours(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise ConfigFileError(
            f"{path} is a symbolic link; register does not write through links (it could "
            "change the file the link points to). Replace the link with a regular file, or "
            "use --print-mcp-config and paste the entry yourself. Nothing was changed."
        )
    if not stat.S_ISREG(st.st_mode):
        raise ConfigFileError(f"{path} is not a regular file; nothing was changed.")
    if st.st_uid != os.geteuid():
        raise ConfigFileError(
            f"{path} belongs to user id {st.st_uid}, not to you ({os.geteuid()}); register "
            "will not take over another user's file. Nothing was changed."
        )


def read_config(path: Path) -> str | None:
    """The file's text, or None when it does not exist; a link or a stranger's file is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_if_not_ours(path, path.lstat())
        raise ConfigFileError(f"Cannot read {path}: {exc.strerror}; nothing was changed.") from None
    with os.fdopen(fd, "rb") as fh:
        _refuse_if_not_ours(path, os.fstat(fh.fileno()))
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{path} is larger than any tool config; nothing was changed.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path} is not UTF-8 text; nothing was changed.") from None


def _check_target(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    _refuse_if_not_ours(path, st)


def write_config(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600 (the same checks as `read_config`)."""
    _check_target(path)
    # New folders are private; folders the tool already made keep their mode.
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        write_private_file(path, text)
    except OSError as exc:
        raise ConfigFileError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def remove_config(path: Path) -> bool:
    """Delete a file register created; False when it was already gone."""
    try:
        _check_target(path)
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigFileError(f"Cannot remove {path}: {exc.strerror or exc}.") from None
    return True


def same_text(path: Path, text: str) -> bool:
    """Whether `path` already holds exactly `text` with mode 0600 (nothing to write)."""
    with contextlib.suppress(ConfigFileError):
        if read_config(path) == text:
            return stat.S_IMODE(path.stat().st_mode) == 0o600
    return False
