"""Configurations described by LLM headers, parsed and fingerprinted once per process.

A tool sends the same `X-PowerMem-LLM-*` headers on every request; validating them and the
HMAC of their fingerprint were most of what binding by headers cost (issue 14: ~6 of ~15 µs).
Remembered by the headers' raw values, so a hit is one dict lookup; what fails to parse is
never remembered (the error is raised again, from the same input). Bounded by `MAX_PARSED`,
the oldest first. It holds keys in this process's memory, as the relay's decrypted targets
do, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.instances.model import InstanceConfig

__all__ = ["MAX_PARSED", "Fields", "ParsedConfigs"]

MAX_PARSED = 4096
# provider, model, api_key, base_url, client: as the headers gave them (None when absent).
Fields = tuple[str | None, str | None, str | None, str | None, str | None]


class ParsedConfigs:
    def __init__(self, digest: Callable[[InstanceConfig], str], limit: int = MAX_PARSED) -> None:
        self._digest = digest
        self._limit = limit
        self._seen: dict[Fields, tuple[InstanceConfig, str]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, fields: Fields) -> tuple[InstanceConfig, str]:
        """The configuration and its digest; `InvalidConfig` for fields that do not parse."""
        found = self._seen.get(fields)
        if found is None:
            provider, model, api_key, base_url, client = fields
            config = InstanceConfig.parse(
                provider=provider, model=model, api_key=api_key, base_url=base_url, client=client
            )
            found = (config, self._digest(config))
            if len(self._seen) >= self._limit:
                del self._seen[next(iter(self._seen))]
            self._seen[fields] = found
        return found
