"""Start the stock powermem-server for end-to-end tests, wired like the gateway wires it.

It is the real thing: `opentelemetry-instrument powermem-server`, started by
`gateway.proxy.managed.ManagedUpstream` with the environment of `gateway.proxy.upstream_env`,
SQLite in a temp dir, embeddings from a `FakeOpenAI`, and its LLM at `llm_url` (a fake provider
directly, or the gateway's relay).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.proxy.managed import ManagedUpstream
from gateway.settings import Settings

__all__ = ["EMBEDDING_DIMS", "PowermemFactory", "PowermemServer", "powermem_env"]

EMBEDDING_DIMS = 64


def powermem_env(root: Path, embedding_url: str) -> dict[str, str]:
    """A `.env` as a user would write it: SQLite storage, OpenAI-compatible embeddings."""
    return {
        "DATABASE_PROVIDER": "sqlite",
        "SQLITE_PATH": str(root / "powermem.db"),
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_API_KEY": "sk-embed-test-key",
        "EMBEDDING_MODEL": "fake-embedding",
        "EMBEDDING_DIMS": str(EMBEDDING_DIMS),
        "OPENAI_EMBEDDING_BASE_URL": embedding_url,
        # The .env's own LLM: must never be what the upstream uses.
        "LLM_PROVIDER": "anthropic",
        "LLM_API_KEY": "sk-ant-env-file-key",
        "LLM_MODEL": "claude-from-env",
        # Keep powermem's own telemetry and audit files inside the test's temp dir.
        "TELEMETRY_ENABLED": "false",
        # powermem resolves ~/.powermem/.env itself: point HOME at the temp dir.
        "HOME": str(root),
    }


class PowermemServer:
    """A running stock powermem-server; `url` is its base URL, `stop()` ends it."""

    def __init__(
        self,
        root: Path,
        *,
        embedding_url: str,
        llm_url: str,
        llm_key: str = "relay-token-for-tests",
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        env = {**powermem_env(root, embedding_url), **(extra_env or {})}
        self.llm_key = llm_key
        self.upstream = ManagedUpstream(
            Settings(data_dir=root / "gateway"),
            relay_token=llm_key,
            env=env,
            relay_url=llm_url,
            startup_timeout=startup_timeout,
            stop_timeout=5.0,
        )

    @property
    def url(self) -> str:
        return self.upstream.url

    async def start(self) -> PowermemServer:
        await self.upstream.start()
        return self

    async def stop(self) -> None:
        await self.upstream.stop()

    async def __aenter__(self) -> PowermemServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# `await factory(llm_url, *, llm_key=..., extra_env=None)`: see tests/conftest_powermem.py.
PowermemFactory = Callable[..., Awaitable[PowermemServer]]
