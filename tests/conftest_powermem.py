"""Fixtures that start the stock powermem-server; load with `pytest_plugins`.

    pytest_plugins = ["tests.conftest_powermem"]

- `fake_embedder`: a `FakeOpenAI` that serves powermem's embeddings.
- `fake_llm`: a `FakeOpenAI` for powermem's LLM calls (when not going through a relay).
- `powermem_factory`: `await powermem_factory(llm_url, llm_key=..., extra_env=None)` starts a
  `PowermemServer` (stopped at teardown); point `llm_url` at a fake or at a gateway relay.
- `powermem`: a server whose LLM is `fake_llm` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import EMBEDDING_DIMS, PowermemFactory, PowermemServer

__all__ = ["fake_embedder", "fake_llm", "powermem", "powermem_factory"]


@pytest.fixture
async def fake_embedder() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(embedding_dims=EMBEDDING_DIMS) as fake:
        yield fake


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def powermem_factory(
    tmp_path: Path, fake_embedder: FakeOpenAI
) -> AsyncIterator[PowermemFactory]:
    started: list[PowermemServer] = []

    async def start(
        llm_url: str,
        *,
        llm_key: str = "relay-token-for-tests",
        extra_env: dict[str, str] | None = None,
    ) -> PowermemServer:
        root = tmp_path / f"powermem-{len(started)}"
        root.mkdir()
        server = PowermemServer(
            root,
            embedding_url=fake_embedder.url,
            llm_url=llm_url,
            llm_key=llm_key,
            extra_env=extra_env,
        )
        started.append(server)
        return await server.start()

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def powermem(powermem_factory: PowermemFactory, fake_llm: FakeOpenAI) -> PowermemServer:
    return await powermem_factory(fake_llm.url)
