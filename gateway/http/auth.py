"""The admin check of the management routes: 401 (audited) or 429 while backing off."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import AdminAuthRequired
from gateway.http.appkeys import ADMIN, REGISTRY
from gateway.http.gate import AdminGate, bearer_matches
from gateway.instances.model import INSTANCE_ID_RE

__all__ = ["AdminGate", "admin_presented", "bearer_matches", "require_admin"]

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="powermem-gateway"'}


def admin_presented(request: web.Request) -> bool:
    """Whether the caller sent an `Authorization` header at all."""
    return "Authorization" in request.headers


def require_admin(request: web.Request) -> None:
    """Let the call through with the right admin token; 401 (audited) or 429 otherwise."""
    authorization = request.headers.get("Authorization")
    if request.app[ADMIN].verify(authorization, request.remote):
        return
    if authorization:  # a wrong token is a guess worth a line in the audit trail
        instance_id = request.match_info.get("instance_id")
        request.app[REGISTRY].audit.record(
            "admin_auth_failed",
            instance_id=instance_id if instance_id and INSTANCE_ID_RE.match(instance_id) else None,
            source=request.remote or "",
        )
    raise AdminAuthRequired(
        "This call needs the admin token: send 'Authorization: Bearer <token>' (the gateway "
        "keeps it in admin.token in its data dir unless POWERMEM_GATEWAY_ADMIN_TOKEN sets it).",
        headers=WWW_AUTHENTICATE,
    )
