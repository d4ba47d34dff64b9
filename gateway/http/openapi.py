"""`GET /gateway/openapi.json`: the gateway's own endpoints, described for people and fuzzers.

Only the paths table is written by hand (`gateway.http.openapi_paths`), because it is the
contract (DESIGN.md §3): which method on which path, who may call it, which shape goes in and
which comes out. Every schema is generated from the declared shapes the handlers themselves
validate with and answer through (`gateway.http.shapes`, `gateway.instances`,
`gateway.relay.body`), so the document cannot say anything looser or stricter than what is
enforced
(`tests/test_openapi_agreement.py` proves it both ways). Everything else on the gateway is
powermem's own API, passed through, and described by powermem.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web
from pydantic.json_schema import JsonSchemaMode

from gateway import __version__
from gateway.http.openapi_paths import JSON, Shapes, paths

__all__ = ["openapi_document", "routes"]

routes = web.RouteTableDef()


def _resolve(node: Any, refs: dict[tuple[str, JsonSchemaMode], JSON]) -> Any:
    """Replace each `{"$shape": key}` placeholder by the generated `$ref`."""
    if isinstance(node, dict):
        if set(node) == {"$shape"}:
            return refs[node["$shape"]]
        return {k: _resolve(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, refs) for v in node]
    return node


def _readable_names(document: JSON) -> JSON:
    """`Envelope_Registration_` (pydantic's name for a generic) reads as `RegistrationEnvelope`."""
    text = json.dumps(document)
    for name in list(document["components"]["schemas"]):
        if name.startswith("Envelope_") and name.endswith("_"):
            text = text.replace(f'"{name}"', f'"{name[9:-1]}Envelope"')
            text = text.replace(f'/{name}"', f'/{name[9:-1]}Envelope"')
    result: JSON = json.loads(text)
    return result


@functools.cache
def _document() -> str:
    shapes = Shapes()
    table = paths(shapes)
    refs, schemas = shapes.schemas()
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "powermem-gateway",
            "version": __version__,
            "description": (
                "Per-client LLM instances in front of one powermem server. Every other path is "
                "powermem's own API, forwarded."
            ),
        },
        "paths": _resolve(table, refs),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "POWERMEM_GATEWAY_ADMIN_TOKEN, or admin.token in the data dir.",
                },
                "relayToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The relay token (relay.token in the data dir).",
                },
            },
        },
    }
    return json.dumps(_readable_names(document))


def openapi_document() -> JSON:
    """The OpenAPI 3.1 description of the endpoints the gateway serves itself."""
    result: JSON = json.loads(_document())
    return result


@routes.get("/gateway/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_document(), content_type="application/json")
