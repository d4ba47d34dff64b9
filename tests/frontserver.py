"""The whole gateway (front, bridge, app) on a loopback port, for `aiohttp_client`."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from gateway.front.runner import GatewayRunner
from gateway.http.app import create_app
from gateway.proxy.managed import free_port
from gateway.settings import Settings
from tests.powermem_server import powermem_env

__all__ = ["GatewayTestServer", "managed_gateway"]


class GatewayTestServer(BaseTestServer):
    """`await aiohttp_client(GatewayTestServer(app))`: the TestClient API, the real front."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return GatewayRunner(self.app, **kwargs)


async def managed_gateway(
    root: Path,
    *,
    embedding_url: str,
    default_url: str,
    default_key: str,
    data_dir: Path | None = None,
) -> tuple[GatewayTestServer, str, Settings]:
    """The gateway running the stock powermem-server, started; its `.env`'s own LLM is an
    OpenAI-compatible fake at `default_url` with `default_key` (what unbound calls spend)."""
    env_file = root / "powermem.env"
    env = {
        **powermem_env(root, embedding_url),
        "LLM_PROVIDER": "openai",
        "LLM_API_KEY": default_key,
        "LLM_MODEL": "default-model",
        "OPENAI_LLM_BASE_URL": default_url,
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for attempt in range(3):
        # A free port can be taken by someone's outgoing connection before we bind it.
        port = free_port()
        settings = Settings(
            port=port,
            data_dir=data_dir or root / "data",
            instances_file=root / "instances.yaml",
            env_file=env_file,
        )
        server = GatewayTestServer(create_app(settings), host="127.0.0.1", port=port)
        try:
            await server.start_server()
        except OSError as exc:
            await server.close()
            if exc.errno != errno.EADDRINUSE or attempt == 2:
                raise
            continue
        return server, f"http://127.0.0.1:{port}", settings
    raise AssertionError("unreachable")
