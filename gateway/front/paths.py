"""Where a request goes, decided on the path as an origin server would read it.

The gateway's own paths carry provider keys (`/api/v1/instances…`) or trust (`/relay/…`), so
every spelling of them must reach our handlers and none may be forwarded to powermem:
`//api/v1/instances`, `/API/v1/Instances`, `/api/v1/instances;x`, `/api%2Fv1%2Finstances`,
`/api/v1/./instances/`, double-encoded variants. Routing looks at a canonical form —
decoded (up to three rounds; more is refused), `\\` read as `/`, `;params` dropped, empty and
dot segments resolved — and compares our prefixes case-insensitively. Proxied paths are
forwarded exactly as received: powermem does its own decoding.

An instance-scoped base URL `/i/<instance>[~<secret>]/<path>` means `<path>` bound to that
instance; the scope is taken off before routing the rest, which may itself be any path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

__all__ = ["PathError", "Route", "canonical", "route"]

Kind = Literal["own", "relay", "proxy"]

# Paths served by the aiohttp app through the bridge; anything below them is ours too.
OWN_PREFIXES = ("/api/v1/instances", "/gateway", "/metrics")
RELAY_PREFIX = "/relay"
SCOPE_PREFIX = "/i/"
_PARAMS = re.compile(r";[^/]*")


class PathError(ValueError):
    """A path the gateway will not guess about: encoded past three rounds, or a scoped URL
    that is not written plainly (`/i/<instance>/…`)."""


@dataclass(frozen=True, slots=True)
class Route:
    kind: Kind
    # own/relay: the canonical path to route on; proxy: the path to forward, exactly as sent.
    path: str
    # The query string with its '?', or "".
    query: str
    # The scope segment of an instance-scoped URL (`pmem-…` or `pmem-…~secret`), decoded.
    scope: str | None = None
    # The prefix to put back in front of paths powermem hands out (`Location`).
    prefix: str = ""

    @property
    def target(self) -> str:
        return self.path + self.query


def canonical(path: str) -> str:
    """The path an origin server could take this one for (without changing its case)."""
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        raise PathError("the path is percent-encoded more than three times over")
    path = _PARAMS.sub("", path.replace("\\", "/"))
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def _own_prefix(path: str) -> str | None:
    lowered = path.lower()
    for prefix in (*OWN_PREFIXES, RELAY_PREFIX):
        if lowered == prefix or lowered.startswith(prefix + "/"):
            return prefix
    return None


# Characters a path keeps unencoded when we write the canonical form back (RFC 3986 pchar).
_PCHAR = "/:@!$&'()*+,;=-._~"


def _classify(raw_path: str, query: str, scope: str | None, prefix: str) -> Route:
    clean = canonical(raw_path)
    own = _own_prefix(clean)
    if own is None:
        return Route("proxy", raw_path or "/", query, scope, prefix)
    # Our prefix in our spelling, the rest (ids may be mixed case in instances.yaml) as sent;
    # a trailing slash is kept, so `/api/v1/instances/` stays a path nobody serves.
    path = own + clean[len(own) :]
    if raw_path.endswith("/") and path != "/":
        path += "/"
    kind: Kind = "relay" if own == RELAY_PREFIX else "own"
    return Route(kind, quote(path, safe=_PCHAR), query, scope, prefix)


def route(target: str) -> Route:
    """Classify an origin-form request target (`/path?query`)."""
    if "#" in target:
        # Not part of a request target (RFC 9112 3.2), and uvicorn (powermem's server)
        # drops it: `/api/v1/instances#x` would be forwarded as a path of powermem's
        # and read there as `/api/v1/instances`. Nobody sends one on purpose.
        raise PathError("a request target carries no #fragment")
    raw_path, sep, query = target.partition("?")
    query = sep + query
    if raw_path.startswith(SCOPE_PREFIX):
        segment, slash, rest = raw_path[len(SCOPE_PREFIX) :].partition("/")
        scope = unquote(segment)
        if not scope:
            raise PathError("the scoped URL names no instance: use /i/<instance>/<path>")
        return _classify(slash + rest, query, scope, SCOPE_PREFIX + segment)
    if canonical(raw_path).lower().startswith(SCOPE_PREFIX):
        raise PathError("write an instance-scoped URL plainly, as /i/<instance>/<path>")
    return _classify(raw_path, query, None, "")
