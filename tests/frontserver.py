"""The whole gateway (front, bridge, app) on a loopback port, for `aiohttp_client`."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer

from gateway.front.runner import GatewayRunner

__all__ = ["GatewayTestServer"]


class GatewayTestServer(BaseTestServer):
    """`await aiohttp_client(GatewayTestServer(app))`: the TestClient API, the real front."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return GatewayRunner(self.app, **kwargs)
