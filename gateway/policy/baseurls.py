"""Where a client-supplied base URL may aim the relay's outbound calls.

A base URL registered through the API is a way for a client to make the gateway open
connections. Addresses fall in three kinds: `public`, `private` (loopback, RFC 1918, link-local,
CGNAT, unique-local, unspecified, multicast, reserved) and `metadata` (cloud instance-metadata
endpoints). Private addresses are allowed while the gateway listens on loopback only (a local
Ollama or vLLM must keep working) and refused once it listens elsewhere; metadata addresses are
always refused. An operator allow-list (host names, addresses or CIDRs) overrides both.

The check runs twice: on the URL when an instance is registered or updated (address literals in
any spelling `inet_aton` accepts, IPv4 inside IPv6, and names that are local by definition), and
on the addresses a name resolves to at call time (`PolicyResolver`), so a name that resolves to
a refused address, now or after a DNS change, never gets a connection: aiohttp connects to
exactly the addresses the resolver returned.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.errors import BaseUrlRefused

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["AddressRefused", "PolicyResolver", "UrlPolicy", "classify", "parse_host"]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Kind = Literal["public", "private", "metadata"]

# AWS/GCP/Azure/OpenStack (IPv4 and AWS's IPv6), AWS ECS task metadata, Alibaba Cloud.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# What `inet_aton` may read as an IPv4 address: decimal, octal or hex parts, 1 to 4 of them.
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")


def parse_host(host: str) -> IP | None:
    """The address a host literally names, in any spelling the C library accepts; else None.

    `2130706433`, `0x7f.1`, `0177.0.0.1` and `127.1` all name 127.0.0.1.
    """
    host = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: mapped, compatible, 6to4, Teredo, NAT64."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def classify(ip: IP) -> Kind:
    """`metadata`, `private` (anything not reachable on the public internet) or `public`."""
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = [classify(v4) for v4 in _embedded_ipv4(ip)]
        if "metadata" in inner:
            return "metadata"
        if "private" in inner:
            return "private"
    if (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    ):
        return "private"
    return "public"


@dataclass(frozen=True)
class UrlPolicy:
    """Which addresses a client-supplied base URL may reach."""

    allow_private: bool
    allowed_names: frozenset[str] = frozenset()
    allowed_networks: tuple[Network, ...] = ()
    listen_host: str = "127.0.0.1"

    @classmethod
    def build(
        cls, *, allow_private: bool, allowed: Iterable[str] = (), listen_host: str = "127.0.0.1"
    ) -> UrlPolicy:
        """A policy from an allow-list of host names, addresses and CIDRs (ValueError if bad)."""
        names: set[str] = set()
        networks: list[Network] = []
        for entry in (e.strip().lower() for e in allowed):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if not re.fullmatch(r"[a-z0-9_.-]+", entry):
                    raise ValueError(
                        f"allowed base-URL host {entry[:80]!r} is neither a host name, "
                        "an address nor a CIDR block"
                    ) from None
                names.add(entry.removesuffix("."))
        return cls(allow_private, frozenset(names), tuple(networks), listen_host)

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlPolicy:
        return cls.build(
            allow_private=settings.private_base_urls_allowed,
            allowed=settings.allowed_base_url_hosts,
            listen_host=settings.host,
        )

    def name_allowed(self, host: str) -> bool:
        return host.strip().lower().removesuffix(".") in self.allowed_names

    def refusal(self, ip: IP) -> str | None:
        """Why the address is refused, or None when it may be used."""
        if any(ip in net for net in self.allowed_networks if net.version == ip.version):
            return None
        kind = classify(ip)
        if kind == "metadata":
            return "a cloud metadata address"
        if kind == "private" and not self.allow_private:
            return "a private, loopback or link-local address"
        return None

    def check_host(self, host: str) -> None:
        """Refuse a host that names a refused address literally or by a local-only name."""
        if self.name_allowed(host):
            return
        name = host.strip().lower().removesuffix(".")
        ip = parse_host(name)
        if ip is None:
            if name in LOOPBACK_NAMES or name.endswith(".localhost"):
                ip = ipaddress.IPv4Address("127.0.0.1")
            elif name in METADATA_NAMES:
                ip = ipaddress.IPv4Address("169.254.169.254")
            else:
                return  # an ordinary name: its addresses are checked at call time
        if (reason := self.refusal(ip)) is not None:
            raise self.error(host, reason)

    def check_url(self, url: str) -> None:
        """Refuse a base URL that is not http(s) or whose host is refused (`BaseUrlRefused`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BaseUrlRefused(
                "base_url must be an http:// or https:// URL with a host.",
                details={"field": "base_url"},
            )
        self.check_host(parts.hostname)

    def error(self, host: str, reason: str, *, resolved: bool = False) -> BaseUrlRefused:
        host = host[:100]
        if "metadata" in reason:
            how = f"--allow-base-url-host {host}"
        else:
            how = f"--allow-private-base-urls or --allow-base-url-host {host}"
        verb = "resolves to" if resolved else "is"
        return BaseUrlRefused(
            f"base_url host {host} {verb} {reason}, which this gateway does not call for "
            f"clients (it listens on {self.listen_host}); the operator can allow it with {how}.",
            details={"field": "base_url", "host": host},
        )


class AddressRefused(OSError):
    """Every address a name resolved to is refused by the base-URL policy."""

    def __init__(self, error: BaseUrlRefused) -> None:
        super().__init__(error.message)
        self.error = error


class PolicyResolver(AbstractResolver):
    """A resolver that drops refused addresses, and fails when none is left."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.name_allowed(host):
            return results
        kept, reason = [], "not an address"
        for result in results:
            ip = parse_host(result["host"])
            why = self._policy.refusal(ip) if ip is not None else reason
            if why is None:
                kept.append(result)
            else:
                reason = why
        if not kept:
            raise AddressRefused(self._policy.error(host, reason, resolved=True))
        return kept

    async def close(self) -> None:
        await self._inner.close()
