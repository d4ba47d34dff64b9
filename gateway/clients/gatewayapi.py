"""A small async client for a running gateway's management, status and relay endpoints.

Error envelopes become `GatewayRefused` (with the gateway's own message), connection failures
become `GatewayUnreachable` naming the URL and what to do. A key only ever travels in the
body of a register or update call, and no error message here ever repeats a request body.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from gateway.clients.errors import GatewayRefused, GatewayUnreachable

__all__ = ["DEFAULT_GATEWAY_URL", "GatewayAPI", "ScopedCheck", "gateway_url", "instance_fields"]

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8848"
INSTANCE_HEADER = "X-PowerMem-Instance"
# Answered by powermem itself when the request is forwarded; the gateway checks the id first.
BOUND_CHECK_PATH = "/api/v1/system/health"
TIMEOUT = 30.0
PROBE_TIMEOUT = 75.0


@dataclass(frozen=True)
class ScopedCheck:
    """What a scoped URL answered: `bound` (the gateway took it), `secret` (the instance needs
    its secret, or this one is wrong), `unknown` (no such instance); `status` as answered."""

    state: Literal["bound", "secret", "unknown"]
    status: int
    message: str = ""


def gateway_url(value: str | None) -> str:
    """`--gateway`, else `POWERMEM_GATEWAY_URL`, else the default; checked and without a `/`."""
    url = (value or os.environ.get("POWERMEM_GATEWAY_URL") or DEFAULT_GATEWAY_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GatewayUnreachable(
            f"Gateway URL {url!r} is not an http(s) URL; pass e.g. --gateway {DEFAULT_GATEWAY_URL}."
        )
    return url.rstrip("/")


def instance_fields(
    *, client: str, provider: str, model: str, api_key: str, base_url: str
) -> dict[str, str]:
    """The body of a register or update call."""
    return {
        "client": client,
        "provider": provider,
        "model": model,
        "api_key": api_key,
        "base_url": base_url,
    }


class GatewayAPI:
    """`async with GatewayAPI(url, admin_token=…) as api:` then call its methods."""

    def __init__(self, url: str, *, admin_token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._admin_token = admin_token
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayAPI:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT), trust_env=False
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    # -- plumbing --------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        admin: bool = False,
        headers: dict[str, str] | None = None,
        seconds: float = TIMEOUT,
        url: bool = False,
    ) -> tuple[int, Any]:
        """(status, parsed JSON); connection trouble and non-JSON answers raise.

        `path` is a full URL when `url` is true (a scoped URL that names a secret: never put
        into a message)."""
        assert self._session is not None, "use GatewayAPI as an async context manager"
        sent = dict(headers or {})
        if admin and self._admin_token:
            sent["Authorization"] = f"Bearer {self._admin_token}"
        try:
            async with self._session.request(
                method,
                path if url else self.url + path,
                json=body,
                headers=sent,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=seconds),
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayUnreachable(
                f"Cannot reach the gateway at {self.url} ({type(exc).__name__}): start it with "
                "`powermem-gateway serve`, or pass --gateway / set POWERMEM_GATEWAY_URL."
            ) from None
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            if url:
                return status, None  # powermem's own answer through a scoped URL
            raise GatewayUnreachable(
                f"{self.url}{path} answered HTTP {status} with something that is not JSON: "
                "is that URL a powermem-gateway?"
            ) from None

    @staticmethod
    def _refused(status: int, payload: Any) -> GatewayRefused:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or "request failed")
            code = str(error.get("code") or "ERROR")
            details = error.get("details") if isinstance(error.get("details"), dict) else {}
        else:
            message, code, details = f"HTTP {status}", "HTTP_ERROR", {}
        if status == 401:
            message += (
                " Run this where the gateway's data dir is, or set POWERMEM_GATEWAY_ADMIN_TOKEN"
                " (or …_ADMIN_TOKEN_FILE) to the gateway's admin token."
            )
        return GatewayRefused(message, status=status, code=code, details=details)

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        status, payload = await self._call(method, path, **kwargs)
        if status >= 400 or not isinstance(payload, dict) or payload.get("success") is not True:
            raise self._refused(status, payload)
        return payload.get("data")

    # -- endpoints -------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._data("GET", "/gateway/health")
        return data

    async def status(self) -> dict[str, Any]:
        """Status with details when our admin token is right, else the public part."""
        try:
            data: dict[str, Any] = await self._data("GET", "/gateway/status", admin=True)
        except GatewayRefused as exc:
            if exc.status != 401 or not self._admin_token:
                raise
            data = await self._data("GET", "/gateway/status")
        return data

    async def probe(self) -> dict[str, Any] | None:
        """`POST /gateway/probe`'s answer, or None when this gateway has no such endpoint."""
        status, payload = await self._call(
            "POST", "/gateway/probe", admin=True, seconds=PROBE_TIMEOUT
        )
        if status in (404, 405):
            return None
        if status >= 400 or not isinstance(payload, dict) or not payload.get("success"):
            raise self._refused(status, payload)
        data: dict[str, Any] = payload["data"]
        return data

    async def register(self, fields: dict[str, str]) -> dict[str, Any]:
        """`data` of `POST /api/v1/instances`: `instance_id`, `created`, `instance`."""
        data: dict[str, Any] = await self._data("POST", "/api/v1/instances", body=fields)
        return data

    async def show(self, instance_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._data(
            "GET", f"/api/v1/instances/{instance_id}", admin=True
        )
        return data

    async def update(self, instance_id: str, fields: dict[str, str]) -> dict[str, Any]:
        data: dict[str, Any] = await self._data(
            "PUT", f"/api/v1/instances/{instance_id}", body=fields, admin=True
        )
        return data

    async def delete(self, instance_id: str) -> None:
        await self._data("DELETE", f"/api/v1/instances/{instance_id}", admin=True)

    async def is_known(self, instance_id: str) -> bool:
        """Whether the gateway accepts this id on a client request (needs no admin token)."""
        status, payload = await self._call(
            "GET", BOUND_CHECK_PATH, headers={INSTANCE_HEADER: instance_id}
        )
        if status in (400, 404) and isinstance(payload, dict):
            code = (payload.get("error") or {}).get("code")
            return code not in ("INSTANCE_NOT_FOUND", "INVALID_HEADER")
        return True

    async def ready(self) -> tuple[bool, str, int | None]:
        """`/gateway/ready`: (ready, why not, what powermem answered the gateway's memory call).

        The gateway asks with powermem's API key when powermem's own auth is on."""
        status, payload = await self._call("GET", "/gateway/ready", seconds=PROBE_TIMEOUT)
        if status == 200:
            return True, "", 200
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return False, f"/gateway/ready answered HTTP {status}", None
        details = error.get("details")
        upstream = details.get("upstream_status") if isinstance(details, dict) else None
        message = str(error.get("message") or f"HTTP {status}")
        return False, message, upstream if isinstance(upstream, int) else None

    async def scoped(self, base: str) -> ScopedCheck:
        """Ask `<base>/api/v1/system/health` the way a tool holding only that URL would."""
        status, payload = await self._call("GET", base.rstrip("/") + BOUND_CHECK_PATH, url=True)
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        message = str(error.get("message") or "") if isinstance(error, dict) else ""
        if code == "INSTANCE_SECRET_REQUIRED":
            return ScopedCheck("secret", status, message)
        if code in ("INSTANCE_NOT_FOUND", "INVALID_HEADER") or (status == 404 and not code):
            return ScopedCheck("unknown", status, message)
        return ScopedCheck("bound", status, message)

    async def rotate_secret(self, instance_id: str) -> str:
        """A new instance secret (admin; the old one stops working). Shown by the gateway once."""
        status, payload = await self._call(
            "POST", f"/api/v1/instances/{instance_id}/secret", admin=True
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        if status < 400 and isinstance(data, dict) and isinstance(data.get("secret"), str):
            return str(data["secret"])
        if status in (404, 405):
            raise GatewayRefused(
                f"This gateway needs an instance secret with {instance_id}, and it shows a "
                "secret only when an instance is first registered; it cannot issue a new one "
                "(no secret rotation route: update the gateway).",
                status=status,
                code="SECRET_UNAVAILABLE",
            )
        raise self._refused(status, payload)

    async def provider_check(self, instance_id: str) -> tuple[int, str]:
        """A one-token call to the instance's provider, made by the gateway: (status, detail).

        Needs the admin token: the call spends the instance's quota, and only requests the
        gateway forwarded may reach the relay with an instance (see gateway.proxy.ledger)."""
        data: dict[str, Any] = await self._data(
            "POST", f"/gateway/probe/{instance_id}", admin=True, seconds=PROBE_TIMEOUT
        )
        return int(data["status"]), str(data["detail"])
