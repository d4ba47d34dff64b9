"""`/api/v1/instances`: register, list, show, update and delete instances.

Bodies are read under a size cap, then validated by their declared shapes in one parse
(`InstanceConfig`, `InstanceUpdate`); answers are built from `gateway.http.shapes`.
Registration is open; a registration that presents the admin token is privileged (not
subject to the registration caps), and a wrong token there is a failed admin authentication.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import InvalidConfig, MethodNotAllowed, NotFound
from gateway.http.appkeys import REGISTRY
from gateway.http.auth import admin_presented, require_admin
from gateway.http.bodies import read_body, require_json
from gateway.http.envelope import ok
from gateway.http.shapes import (
    Deleted,
    InstancePage,
    ListQuery,
    Registration,
    SecretRevoked,
    SecretRotated,
    parse_update,
)
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig
from gateway.proxy.binding import Binding

__all__ = ["MAX_BODY", "routes"]

routes = web.RouteTableDef()
MAX_BODY = 64 * 1024


def _instance_id(request: web.Request) -> str:
    instance_id = request.match_info["instance_id"]
    if not INSTANCE_ID_RE.match(instance_id):
        raise InvalidConfig(
            "instance id must look like pmem-0123456789abcdef.", details={"field": "instance_id"}
        )
    return instance_id


@routes.post("/api/v1/instances")
async def register(request: web.Request) -> web.Response:
    privileged = admin_presented(request)
    if privileged:
        require_admin(request)
    require_json(request)
    config = InstanceConfig.validate_body(await read_body(request, MAX_BODY))
    done = await request.app[REGISTRY].register(
        config, source=request.remote or "", privileged=privileged
    )
    record, created = done.record, done.created
    answer = Registration(instance_id=record.instance_id, created=created, instance=record.view())
    if done.secret is not None:
        # Shared gateways: the secret exists in plaintext in this answer only.
        answer = answer.model_copy(update={"secret": done.secret})
    return ok(
        answer,
        "Instance registered" if created else "Instance already registered",
        status=201 if created else 200,
        headers=Binding(record, created).response_headers(),
    )


@routes.get("/api/v1/instances")
async def list_instances(request: web.Request) -> web.Response:
    """One page of instances; the count and the page come from SQL, off the event loop."""
    require_admin(request)
    query = ListQuery.of(request.query)
    registry = request.app[REGISTRY]
    found = await registry.page(query.limit, query.cursor, query.client, query.provider)
    total = await registry.total(query.client, query.provider)
    page = InstancePage(
        instances=[r.view() for r in found.items], total=total, next_cursor=found.next_cursor
    )
    return ok(page, f"{len(found.items)} of {total} instance(s)")


@routes.get("/api/v1/instances/{instance_id}")
async def show(request: web.Request) -> web.Response:
    require_admin(request)
    registry = request.app[REGISTRY]
    record = await registry.get(_instance_id(request))
    return ok(record.view(await registry.usage(record.instance_id)), "Instance found")


@routes.put("/api/v1/instances/{instance_id}")
async def update(request: web.Request) -> web.Response:
    require_admin(request)
    instance_id = _instance_id(request)
    require_json(request)
    changes = parse_update(await read_body(request, MAX_BODY))
    record = await request.app[REGISTRY].update(instance_id, changes, source=request.remote or "")
    return ok(record.view(), "Instance updated")


@routes.delete("/api/v1/instances/{instance_id}")
async def delete(request: web.Request) -> web.Response:
    require_admin(request)
    instance_id = _instance_id(request)
    await request.app[REGISTRY].delete(instance_id, source=request.remote or "")
    return ok(Deleted(instance_id=instance_id, deleted=True), "Instance deleted")


@routes.post("/api/v1/instances/{instance_id}/secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new instance secret (the old one stops working at once, in every process)."""
    require_admin(request)
    instance_id = _instance_id(request)
    secret = await request.app[REGISTRY].rotate_secret(instance_id, source=request.remote or "")
    return ok(SecretRotated(instance_id=instance_id, secret=secret), "Instance secret rotated")


@routes.delete("/api/v1/instances/{instance_id}/secret")
async def revoke_secret(request: web.Request) -> web.Response:
    """No secret: on a shared gateway the id binds nothing until a new one is rotated in."""
    require_admin(request)
    instance_id = _instance_id(request)
    await request.app[REGISTRY].revoke_secret(instance_id, source=request.remote or "")
    return ok(SecretRevoked(instance_id=instance_id, revoked=True), "Instance secret revoked")


_ALLOWED = {0: "GET, POST", 1: "GET, PUT, DELETE", 2: "POST, DELETE"}


@routes.route("*", "/api/v1/instances{rest:(/.*)?}")
async def not_served(request: web.Request) -> web.Response:
    """Every other call under /api/v1/instances is ours too: never forwarded to powermem.

    Without this route the proxy's catch-all would take e.g. a PATCH, body and key included.
    """
    rest = request.match_info["rest"]
    parts = rest.split("/")[1:]
    served = (
        rest == ""
        or (len(parts) == 1 and parts[0])
        or (len(parts) == 2 and parts[0] and parts[1] == "secret")
    )
    if served:
        allowed = _ALLOWED[len(parts)]
        raise MethodNotAllowed(
            f"{request.method} is not supported here; use {allowed}.",
            headers={"Allow": allowed},
        )
    raise NotFound(
        "No such management call; see /api/v1/instances, /api/v1/instances/{id} and "
        "/api/v1/instances/{id}/secret."
    )
