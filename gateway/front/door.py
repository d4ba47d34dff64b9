"""The front door: who may talk to the gateway at all, checked before any route runs.

- `Host` must name the gateway (loopback names and addresses, the listen address, and the
  hosts given with `--allowed-host`): a web page that rebinds its own DNS name to 127.0.0.1
  reaches us with its own name in `Host` and is refused, on every path.
- A browser's cross-origin request is refused unless its `Origin` is on `--allowed-origin`;
  preflights are answered here and never reach powermem, whose wildcard CORS headers are
  removed from every response (`Exchange.send_head`).
- `X-PowerMem-*` request headers are ours: an unknown or misspelled one (`-Instance-Id`,
  underscores) is a 400 naming it, never forwarded and never a silent fallback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.errors import BadRequest, GatewayError
from gateway.proxy.binding import check_header_name

__all__ = ["Admission", "Door", "HostRefused", "OriginRefused"]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
PREFLIGHT_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
# Host values whose verdict is remembered (a refused rebinding name is as cheap as ours).
_SEEN_MAX = 256


class HostRefused(GatewayError):
    """`Host` names a host this gateway does not answer to (DNS rebinding, a stray proxy)."""

    status = 421
    code = "HOST_REFUSED"


class OriginRefused(GatewayError):
    """A cross-origin browser request from an origin that is not allowed."""

    status = 403
    code = "ORIGIN_REFUSED"


@dataclass(frozen=True, slots=True)
class Admission:
    # The origin to answer with CORS headers (an allowed cross-origin request), else None.
    cors_origin: bytes | None
    # True when this is a CORS preflight the door answers itself.
    preflight: bool


def _host_name(authority: str) -> str:
    """`Host: [::1]:8848` → `::1`; `Example.COM.:80` → `example.com`."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0]
    return authority.rsplit(":", 1)[0].rstrip(".") if authority.count(":") == 1 else authority


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Door:
    def __init__(
        self,
        *,
        listen_host: str,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        hosts = {_host_name(h) for h in allowed_hosts if h.strip()}
        self._any_host = "*" in hosts
        if listen_host not in ("", "0.0.0.0", "::"):  # noqa: S104 - a listen address, not a bind
            hosts.add(_host_name(listen_host if ":" not in listen_host else f"[{listen_host}]"))
        self._hosts = frozenset(hosts - {"*"})
        self._origins = frozenset(o.strip().rstrip("/").lower() for o in allowed_origins)
        self._seen: dict[str, bool] = {}

    def host_allowed(self, host: str) -> bool:
        if self._any_host:
            return True
        known = self._seen.get(host)
        if known is None:
            name = _host_name(host)
            known = _is_loopback(name) or name in self._hosts
            # Clients send one or two spellings each: remember the verdicts, boundedly.
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[host] = known
        return known

    def admit(self, method: bytes, headers: list[tuple[bytes, bytes]]) -> Admission:
        """Check one request's head; raises the error to answer with, or says how to go on."""
        host: bytes | None = None
        origin: bytes | None = None
        preflight = False
        for key, value in headers:
            if key == b"host":
                if host is not None:
                    raise BadRequest("More than one Host header.")
                host = value
            elif key == b"origin":
                origin = value
            elif key == b"access-control-request-method":
                preflight = method == b"OPTIONS"
            elif key.startswith((b"x-powermem", b"x_powermem")):
                check_header_name(key)
        if host is None:
            raise BadRequest("The request has no Host header.")
        host_text = host.decode("latin-1")
        if not self.host_allowed(host_text):
            raise HostRefused(
                f"This gateway does not answer to the host {host_text[:100]!r}; add it with "
                "--allowed-host (POWERMEM_GATEWAY_ALLOWED_HOSTS) if it is really ours.",
                details={"host": host_text[:100]},
            )
        cors = self._cors(origin, host_text) if origin is not None else None
        return Admission(cors, preflight and origin is not None)

    def _cors(self, origin: bytes, host: str) -> bytes | None:
        text = origin.decode("latin-1").strip().rstrip("/").lower()
        parts = urlsplit(text) if text != "null" else None
        if (
            parts is not None
            and parts.scheme in ("http", "https")
            and parts.netloc
            and _same_authority(parts.netloc, parts.scheme, host)
        ):
            return None  # same origin: no CORS needed, nothing to add
        if text in self._origins:
            return origin
        raise OriginRefused(
            f"Cross-origin requests from {text[:100]!r} are refused; allow an origin with "
            "--allowed-origin (POWERMEM_GATEWAY_ALLOWED_ORIGINS).",
            details={"origin": text[:100]},
        )


def _same_authority(netloc: str, scheme: str, host: str) -> bool:
    default = "443" if scheme == "https" else "80"
    return _with_port(netloc, default) == _with_port(host.strip().lower(), default)


def _with_port(authority: str, default: str) -> str:
    if authority.startswith("["):
        name, _, rest = authority.partition("]")
        return f"{name}]:{rest.lstrip(':') or default}"
    if authority.count(":") == 1:
        return authority
    return f"{authority}:{default}"
