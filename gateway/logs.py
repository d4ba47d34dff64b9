"""Logging: JSON lines by default (text on request), one line per request, keys never shown.

Secrets are kept out at the source (errors and records never carry a key), and the
formatters scrub anything shaped like a bearer token or provider key as a second line of
defence, since third-party libraries may log what they were given.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from aiohttp import web

from gateway.appkeys import CLIENT_LABEL, INSTANCE_ID, METRICS
from gateway.metrics import route_class

__all__ = ["access_middleware", "configure_logging", "redact"]

access_log = logging.getLogger("gateway.access")

# sk-…, sk-ant-…, pgr-… (relay tokens), and anything after "Bearer ".
_SECRETS = re.compile(
    r"(?P<keep>\b(?:sk|pgr|rk|pk)-[A-Za-z0-9]{0,4})[A-Za-z0-9_\-]{8,}"
    r"|(?P<bearer>Bearer\s+)[^\s\"',;]+",
    re.IGNORECASE,
)
_FIELDS = ("method", "path", "status", "duration_ms", "instance_id", "client", "remote", "route")
_RESERVED = set(vars(logging.makeLogRecord({})))


def redact(text: str) -> str:
    def mask(m: re.Match[str]) -> str:
        if m.group("bearer"):
            return f"{m.group('bearer')}[redacted]"
        return f"{m.group('keep')}…[redacted]"

    return _SECRETS.sub(mask, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED and k in _FIELDS
        )
        line = super().format(record)
        return redact(f"{line} {extra}" if extra else line)


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


@web.middleware
async def access_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """One log line and one metrics observation per request, after it is fully answered."""
    start = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - start
        route = route_class(request.path)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            instance = request.get(INSTANCE_ID)
            access_log.info(
                "%s %s %d",
                request.method,
                request.path,
                status,
                extra={
                    "method": request.method,
                    # The path only: a query string may carry whatever a client put in it.
                    "path": request.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "instance_id": instance,
                    "client": request.get(CLIENT_LABEL) or None,
                    "remote": request.remote,
                    "route": route,
                },
            )
