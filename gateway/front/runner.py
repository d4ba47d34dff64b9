"""`GatewayRunner`: aiohttp's `AppRunner`, with the front serving the port instead of aiohttp.

Everything aiohttp's runner does stays: the app's startup and cleanup (`cleanup_ctx`), sites
(`TCPSite`, `SockSite`, reuse_port for workers), graceful shutdown. Only the protocol factory
the sites listen with changes: `FrontServer`, which hands the gateway's own routes to the
app's server over the bridge and serves the proxy and the relay itself.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from gateway.front.bridge import Bridge
from gateway.front.dispatch import Dispatcher
from gateway.front.door import Door
from gateway.front.proxy import PowermemProxy
from gateway.front.relay import RelayEndpoint
from gateway.front.server import FrontServer, Limits
from gateway.http.appkeys import SETTINGS

__all__ = ["GatewayRunner"]


class GatewayRunner(web.AppRunner):
    """A drop-in `web.AppRunner` whose sites serve the whole gateway."""

    def __init__(self, app: web.Application, *, limits: Limits | None = None, **kwargs: Any):
        super().__init__(app, **kwargs)
        self._limits = limits or Limits()
        self._bridge: Bridge | None = None

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        app = self.app
        settings = app[SETTINGS]
        self._bridge = Bridge(inner)
        door = Door(
            listen_host=settings.host,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
        )
        dispatcher = Dispatcher(door, self._bridge, PowermemProxy(app), RelayEndpoint(app))
        # aiohttp's sites only call the factory and the shutdown hooks, which FrontServer has.
        return cast(web.Server, FrontServer(inner, dispatcher, limits=self._limits))

    async def _cleanup_server(self) -> None:
        if self._bridge is not None:
            await self._bridge.close()
        await super()._cleanup_server()
