"""The client side: point each coding tool at its own instance, keep its id, check the chain.

May import: gateway (top-level modules), observe, policy, instances, proxy, relay.
"""

from __future__ import annotations

from gateway.clients.doctor import Verdict
from gateway.clients.doctorrun import run_doctor
from gateway.clients.errors import (
    ClientSetupError,
    ConfigFileError,
    GatewayRefused,
    GatewayUnreachable,
    MissingSetting,
)
from gateway.clients.gatewayapi import GatewayAPI, gateway_url
from gateway.clients.register import Outcome, Registered, register, unregister
from gateway.clients.scoped import masked, parse_scoped, scoped_url
from gateway.clients.tools import FILE_CLIENTS, KNOWN_CLIENTS, mcp_config, tool_for

__all__ = [
    "FILE_CLIENTS",
    "KNOWN_CLIENTS",
    "ClientSetupError",
    "ConfigFileError",
    "GatewayAPI",
    "GatewayRefused",
    "GatewayUnreachable",
    "MissingSetting",
    "Outcome",
    "Registered",
    "Verdict",
    "gateway_url",
    "masked",
    "mcp_config",
    "parse_scoped",
    "register",
    "run_doctor",
    "scoped_url",
    "tool_for",
    "unregister",
]
