"""Where the powermem server is: a fixed URL (`--upstream`) or the managed child process."""

from __future__ import annotations

from typing import Protocol

__all__ = ["StaticUpstream", "Upstream"]


class Upstream(Protocol):
    @property
    def url(self) -> str:
        """The base URL to forward to; raises `UpstreamStarting` while there is none."""
        ...


class StaticUpstream:
    """An external powermem server the operator runs (`serve --upstream URL`)."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url
