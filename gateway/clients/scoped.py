"""Instance-scoped base URLs: `<gateway>/i/<instance>[~<secret>]`, for tools whose only knob
is a URL (powermem's Claude Code hook reads POWERMEM_BASE_URL; MCP clients take a URL).

The secret, when the gateway is shared, lives only in the tool's own config file: every
message that shows such a URL shows it through `masked`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.instances.model import INSTANCE_ID_RE

__all__ = ["MCP_SUFFIX", "Scoped", "masked", "parse_scoped", "scoped_url"]

MCP_SUFFIX = "/mcp"
# `/i/<instance>[~<secret>]` and whatever follows (`/mcp`, or nothing).
_SCOPE = re.compile(r"/i/(?P<id>[^/~?#]+)(?:~(?P<secret>[^/?#]*))?(?P<rest>/[^?#]*)?$")


@dataclass(frozen=True)
class Scoped:
    """A parsed scoped URL: `gateway` is everything before `/i/`."""

    gateway: str
    instance_id: str
    secret: str | None
    rest: str  # "" or e.g. "/mcp"

    @property
    def base(self) -> str:
        """The scoped base URL, without what follows it."""
        return scoped_url(self.gateway, self.instance_id, self.secret)


def scoped_url(gateway: str, instance_id: str, secret: str | None = None) -> str:
    """`<gateway>/i/<instance>` (plus `~<secret>` on a shared gateway)."""
    return f"{gateway.rstrip('/')}/i/{instance_id}" + (f"~{secret}" if secret else "")


def parse_scoped(url: str) -> Scoped | None:
    """The parts of a scoped URL of some gateway, or None when `url` is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        return None
    match = _SCOPE.search(parts.path)
    if match is None or not INSTANCE_ID_RE.match(match["id"]):
        return None
    prefix = parts.path[: match.start()]
    gateway = f"{parts.scheme}://{parts.netloc}{prefix}"
    return Scoped(gateway, match["id"], match["secret"] or None, match["rest"] or "")


def masked(url: str) -> str:
    """`url` with any instance secret replaced by `…`, safe to print or log."""
    found = parse_scoped(url)
    if found is None or found.secret is None:
        return url
    return scoped_url(found.gateway, found.instance_id, "…") + found.rest
