"""A gateway, its fake upstream and fake providers on their own event loop in a thread.

For synchronous callers (schemathesis' `requests` transport, click's CliRunner): the servers
are real aiohttp servers on loopback ports, so a blocking client can talk to them while the
loop keeps serving.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.front.runner import GatewayRunner
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.fakes.upstream import make_upstream

T = TypeVar("T")

DEFAULT_KEY = "sk-live-default-0123456789abcdef"


class LiveGateway:
    """`with LiveGateway(tmp) as live:` — `live.url`, `live.openai`, `live.anthropic`."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        self.settings_overrides = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self.openai = FakeOpenAI()
        self.anthropic = FakeAnthropic()
        self._upstream: TestServer | None = None
        self._runner: web.AppRunner | None = None
        self.settings: Settings | None = None

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the gateway's loop and wait for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(_call(make), self.loop)
        return future.result(timeout=60)

    async def _start(self) -> None:
        await self.openai.start()
        await self.anthropic.start()
        self._upstream = TestServer(make_upstream(), host="127.0.0.1")
        await self._upstream.start_server()
        env_file = self.root / "powermem.env"
        env_file.write_text(
            "LLM_PROVIDER=openai\n"
            f"LLM_API_KEY={DEFAULT_KEY}\n"
            "LLM_MODEL=default-model\n"
            f"OPENAI_LLM_BASE_URL={self.openai.url}\n"
        )
        values: dict[str, Any] = {
            "data_dir": self.root / "data",
            "instances_file": self.root / "instances.yaml",
            "env_file": env_file,
            "upstream": str(self._upstream.make_url("")).rstrip("/"),
            "provider_timeout": 5.0,
            "provider_retries": 0,
        }
        values.update(self.settings_overrides)
        self.settings = Settings(**values)
        self.app = create_app(self.settings)
        self._runner = GatewayRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._upstream is not None:
            await self._upstream.close()
        await self.openai.close()
        await self.anthropic.close()

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        self.run(self._start)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run(self._stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
