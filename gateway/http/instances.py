"""`/api/v1/instances`: register, list, show, update and delete instances."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.errors import (
    InvalidBody,
    InvalidConfig,
    MethodNotAllowed,
    NotFound,
)
from gateway.http.appkeys import REGISTRY
from gateway.http.auth import require_admin
from gateway.http.bodies import read_json_object
from gateway.http.envelope import ok
from gateway.instances.model import INSTANCE_ID_RE, InstanceConfig
from gateway.proxy.binding import Binding

__all__ = ["routes"]

routes = web.RouteTableDef()
MAX_BODY = 64 * 1024
_FIELDS = ("client", "provider", "model", "api_key", "base_url")


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await read_json_object(request, MAX_BODY)
    unknown = sorted(str(k)[:40] for k in body if k not in _FIELDS)
    if unknown:
        raise InvalidConfig(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}.",
            details={"fields": unknown},
        )
    return body


def _instance_id(request: web.Request) -> str:
    instance_id = request.match_info["instance_id"]
    if not INSTANCE_ID_RE.match(instance_id):
        raise InvalidConfig(
            "instance id must look like pmem-0123456789abcdef.", details={"field": "instance_id"}
        )
    return instance_id


@routes.post("/api/v1/instances")
async def register(request: web.Request) -> web.Response:
    body = await _json_object(request)
    config = InstanceConfig.parse(**{k: body.get(k, "") for k in _FIELDS})
    record, created = await request.app[REGISTRY].resolve(config, source=request.remote or "")
    data = {"instance_id": record.instance_id, "created": created, "instance": record.public()}
    return ok(
        data,
        "Instance registered" if created else "Instance already registered",
        status=201 if created else 200,
        headers=Binding(record, created).response_headers(),
    )


@routes.get("/api/v1/instances")
async def list_instances(request: web.Request) -> web.Response:
    require_admin(request)
    records = await request.app[REGISTRY].list()
    return ok(
        {"instances": [r.public() for r in records], "total": len(records)},
        f"{len(records)} instance(s)",
    )


@routes.get("/api/v1/instances/{instance_id}")
async def show(request: web.Request) -> web.Response:
    require_admin(request)
    registry = request.app[REGISTRY]
    record = await registry.get(_instance_id(request))
    return ok(record.public(await registry.usage(record.instance_id)), "Instance found")


@routes.put("/api/v1/instances/{instance_id}")
async def update(request: web.Request) -> web.Response:
    require_admin(request)
    instance_id = _instance_id(request)
    body = await _json_object(request)
    if not body:
        raise InvalidBody(f"Nothing to update: send any of {', '.join(_FIELDS)}.")
    record = await request.app[REGISTRY].update(instance_id, body, source=request.remote or "")
    return ok(record.public(), "Instance updated")


@routes.delete("/api/v1/instances/{instance_id}")
async def delete(request: web.Request) -> web.Response:
    require_admin(request)
    instance_id = _instance_id(request)
    await request.app[REGISTRY].delete(instance_id, source=request.remote or "")
    return ok({"instance_id": instance_id, "deleted": True}, "Instance deleted")


@routes.route("*", "/api/v1/instances{rest:(/.*)?}")
async def not_served(request: web.Request) -> web.Response:
    """Every other call under /api/v1/instances is ours too: never forwarded to powermem.

    Without this route the proxy's catch-all would take e.g. a PATCH, body and key included.
    """
    rest = request.match_info["rest"]
    if rest == "" or (rest.count("/") == 1 and rest != "/"):
        allowed = "GET, POST" if rest == "" else "GET, PUT, DELETE"
        raise MethodNotAllowed(
            f"{request.method} is not supported here; use {allowed}.",
            headers={"Allow": allowed},
        )
    raise NotFound("No such management call; see /api/v1/instances and /api/v1/instances/{id}.")
