"""Logging: JSON lines by default (text on request), one line per request, keys never shown.

Secrets are kept out at the source (errors and records never carry a key), and the
formatters scrub, as a second line of defence since third-party libraries may log what they
were given, both anything shaped like a bearer token or provider key and, whatever their
shape, the exact secrets the gateway holds (`remember_secret`): its tokens and the keys in use.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from gateway.observe import access
from gateway.observe.redaction import redact, remember_secret

__all__ = ["ACCESS_FIELDS", "access_log", "configure_logging", "redact", "remember_secret"]

access_log = access.access_log

ACCESS_FIELDS = (
    "method",
    "path",
    "status",
    "duration_ms",
    "instance_id",
    "client",
    "remote",
    "route",
)
_RESERVED = set(vars(logging.makeLogRecord({})))


def _is_access(record: logging.LogRecord) -> bool:
    """Access lines are built from our own fields, the path already redacted: the hot path
    skips the scan that every other line gets."""
    return record.name == access_log.name


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if _is_access(record):
            entry.update({k: getattr(record, k, None) for k in ACCESS_FIELDS})
            return json.dumps(entry, ensure_ascii=False)
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED and k in ACCESS_FIELDS
        )
        line = super().format(record)
        line = f"{line} {extra}" if extra else line
        return line if _is_access(record) else redact(line)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access lines skip the logging machinery: formatted directly, written in batches.
    enabled = logging.getLevelName(level.upper()) <= logging.INFO
    style: Literal["json", "text"] = "json" if fmt == "json" else "text"
    access.configure(access.AccessWriter(sys.stderr, style) if enabled else access.DISABLED)
