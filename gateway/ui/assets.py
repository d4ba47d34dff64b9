"""The page's own files (stylesheet, script, icon), shipped in the package and served by the
gateway itself: the page fetches nothing from anywhere else."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources

__all__ = ["ASSETS", "Asset", "asset", "asset_url"]

PREFIX = "/gateway/ui/static/"
ASSETS = {
    "ui.css": "text/css",
    "ui.js": "text/javascript",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@functools.cache
def asset(name: str) -> Asset | None:
    """One of `ASSETS`, read once from the package; None for any other name."""
    content_type = ASSETS.get(name)
    if content_type is None:
        return None
    body = resources.files("gateway.ui").joinpath("static", name).read_bytes()
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def asset_url(name: str) -> str:
    """The asset's URL, versioned by its content so a browser may cache it for good."""
    found = asset(name)
    assert found is not None, name
    return f"{PREFIX}{name}?v={found.etag}"
