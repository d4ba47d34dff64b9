"""Bearer-token checks, in constant time, and the admin gate of the management routes."""

from __future__ import annotations

import hmac

from aiohttp import web

from gateway.errors import AdminAuthRequired
from gateway.http.appkeys import REGISTRY, SETTINGS
from gateway.instances.model import INSTANCE_ID_RE

__all__ = ["bearer_matches", "require_admin"]


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization: Bearer …` header carries exactly `token`."""
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def require_admin(request: web.Request) -> None:
    token = request.app[SETTINGS].admin_token
    if not token:
        return
    if not bearer_matches(request.headers.get("Authorization"), token):
        instance_id = request.match_info.get("instance_id")
        request.app[REGISTRY].audit.record(
            "admin_auth_failed",
            instance_id=instance_id if instance_id and INSTANCE_ID_RE.match(instance_id) else None,
            source=request.remote or "",
        )
        raise AdminAuthRequired(
            "This call needs the admin token: send 'Authorization: Bearer <token>' "
            "(POWERMEM_GATEWAY_ADMIN_TOKEN).",
            headers={"WWW-Authenticate": 'Bearer realm="powermem-gateway"'},
        )
