"""The client side: register coding tools, keep their ids where they look, check the chain.

May import: gateway (top-level modules), observe, policy, instances, proxy, relay.
"""

from __future__ import annotations

from gateway.clients.doctor import Verdict, run_doctor
from gateway.clients.errors import (
    ClientSetupError,
    ConfigFileError,
    GatewayRefused,
    GatewayUnreachable,
    MissingSetting,
)
from gateway.clients.gatewayapi import GatewayAPI, gateway_url
from gateway.clients.locations import FILE_CLIENTS, location_for, mcp_snippet
from gateway.clients.register import Outcome, register, unregister

__all__ = [
    "FILE_CLIENTS",
    "ClientSetupError",
    "ConfigFileError",
    "GatewayAPI",
    "GatewayRefused",
    "GatewayUnreachable",
    "MissingSetting",
    "Outcome",
    "Verdict",
    "gateway_url",
    "location_for",
    "mcp_snippet",
    "register",
    "run_doctor",
    "unregister",
]
