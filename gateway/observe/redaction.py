"""Redaction: whatever a log line holds, no key, token or instance secret is printed whole.

Two rules, applied to every line but access lines (whose only free text, the path, is
redacted when the line is made): anything *shaped* like a secret (below), and, whatever
their shape, the exact secrets the gateway holds (`remember_secret`: its tokens, the keys in
use), found by `gateway.observe.known` in one pass however many there are.
"""

from __future__ import annotations

import re

from gateway.observe.known import KnownSecrets

__all__ = ["redact", "remember_secret"]

# sk-…, sk-ant-…, pgr-… (relay tokens), anything after "Bearer ", the value of a credential
# query parameter (`?key=…`, `&api_key=…`, `access_token=…`), and of a key header or field
# (`x-api-key: …`, `"api_key": "…"`) however a library happens to print it, and the instance
# secret of a scoped URL (`/i/<id>~<secret>/…`: the id stays readable).
_SECRETS = re.compile(
    r"(?P<keep>\b(?:sk|pgr|rk|pk)-[A-Za-z0-9]{0,4})[A-Za-z0-9_\-]{8,}"
    r"|(?P<bearer>Bearer\s+)[^\s\"',;]+"
    r"|(?P<query>[?&](?:key|api[_-]?key|access[_-]?token|token|secret|password|sig|signature)=)"
    r"[^&#\s\"',;]+"
    r"|(?P<field>\b(?:x-api-key|api-key|api_key|apikey|x-powermem-llm-api-key)"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])[^\s\"',;&…]{4,}"
    r"|(?P<scoped>/i/[A-Za-z0-9][A-Za-z0-9._-]{0,63}~)(?!\[redacted\])[^/\s\"'?#]+",
    re.IGNORECASE,
)


def _mask(m: re.Match[str]) -> str:
    for group in ("bearer", "query", "field", "scoped"):
        if m.group(group):
            return f"{m.group(group)}[redacted]"
    return f"{m.group('keep')}…[redacted]"


def _mask_known(secret: str) -> str:
    # A known secret of a recognisable shape is masked as the shape rule would, so a line
    # reads the same whether or not the gateway happens to know that secret yet.
    shaped = _SECRETS.fullmatch(secret)
    return _mask(shaped) if shaped else "[redacted]"


_KNOWN = KnownSecrets(_mask_known)


def remember_secret(value: str | None) -> None:
    """Mask this exact value in every log line from now on (tokens, keys in use)."""
    _KNOWN.add(value)


def redact(text: str) -> str:
    return _SECRETS.sub(_mask, _KNOWN.replace(text))
