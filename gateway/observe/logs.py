"""Logging: JSON lines by default (text on request), one line per request, keys never shown.

Secrets are kept out at the source (errors and records never carry a key), and the
formatters scrub, as a second line of defence since third-party libraries may log what they
were given, both anything shaped like a bearer token or provider key and, whatever their
shape, the exact secrets the gateway holds (`remember_secret`): its tokens and the keys in use.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any

__all__ = ["ACCESS_FIELDS", "access_log", "configure_logging", "redact", "remember_secret"]

access_log = logging.getLogger("gateway.access")

# sk-…, sk-ant-…, pgr-… (relay tokens), anything after "Bearer ", the value of a credential
# query parameter (`?key=…`, `&api_key=…`, `access_token=…`), and of a key header or field
# (`x-api-key: …`, `"api_key": "…"`) however a library happens to print it.
_SECRETS = re.compile(
    r"(?P<keep>\b(?:sk|pgr|rk|pk)-[A-Za-z0-9]{0,4})[A-Za-z0-9_\-]{8,}"
    r"|(?P<bearer>Bearer\s+)[^\s\"',;]+"
    r"|(?P<query>[?&](?:key|api[_-]?key|access[_-]?token|token|secret|password|sig|signature)=)"
    r"[^&#\s\"',;]+"
    r"|(?P<field>\b(?:x-api-key|api-key|api_key|apikey|x-powermem-llm-api-key)"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])[^\s\"',;&…]{4,}",
    re.IGNORECASE,
)
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


class _KnownSecrets:
    """Exact strings masked in every log line; bounded, most recently used kept."""

    LIMIT = 4096
    MIN_LEN = 8  # shorter values would mask ordinary words

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        if not value or len(value) < self.MIN_LEN:
            return
        with self._lock:
            if value in self._values:
                self._values.move_to_end(value)
                return
            self._values[value] = None
            while len(self._values) > self.LIMIT:
                self._values.popitem(last=False)
            # Longest first, so a secret that contains another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def sub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(_mask_known, text) if pattern is not None else text


_KNOWN = _KnownSecrets()


def remember_secret(value: str | None) -> None:
    """Mask this exact value in every log line from now on (tokens, keys in use)."""
    _KNOWN.add(value)


def _mask(m: re.Match[str]) -> str:
    for group in ("bearer", "query", "field"):
        if m.group(group):
            return f"{m.group(group)}[redacted]"
    return f"{m.group('keep')}…[redacted]"


def _mask_known(m: re.Match[str]) -> str:
    # A known secret of a recognisable shape is masked as the shape rule would, so a line
    # reads the same whether or not the gateway happens to know that secret yet.
    shaped = _SECRETS.fullmatch(m.group())
    return _mask(shaped) if shaped else "[redacted]"


def redact(text: str) -> str:
    return _SECRETS.sub(_mask, _KNOWN.sub(text))


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
