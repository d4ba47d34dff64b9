"""The paths table of `/gateway/openapi.json`: the one part written by hand, because it is the
contract (DESIGN.md §3): which method on which path, who may call it, which declared shape
goes in and which comes out. `gateway.http.openapi` turns the shapes named here into
generated schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from gateway.http.shapes import (
    Deleted,
    Envelope,
    ErrorEnvelope,
    Health,
    InstancePage,
    InstanceUpdate,
    ListQuery,
    OpenAIError,
    ProbeResult,
    ProviderProbe,
    Ready,
    Registration,
    SecretRevoked,
    SecretRotated,
    Status,
)
from gateway.instances.model import InstanceConfig
from gateway.instances.view import InstanceView
from gateway.relay.body import ChatCompletion, ChatRequest

__all__ = ["JSON", "Shapes", "paths"]

JSON = dict[str, Any]
_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "Invalid input; nothing changed.",
    401: "Missing or wrong admin token.",
    403: "The base-URL policy refuses this URL.",
    404: "No such instance.",
    405: "Method not supported on this path.",
    409: "Conflicts with another or a read-only instance.",
    415: "The body is not declared application/json.",
    429: "Too many attempts (failed admin authentications back off per address; /metrics "
    "answers five scrapes a second per address).",
    503: "Not available right now (the registry, or powermem not ready yet).",
}


class Shapes:
    """Collects the shapes the paths table names; their schemas are generated in one go."""

    def __init__(self) -> None:
        self._wanted: dict[tuple[str, JsonSchemaMode], TypeAdapter[Any]] = {}

    def ref(self, shape: Any, mode: JsonSchemaMode) -> JSON:
        adapter = TypeAdapter(shape)
        key = (repr(shape), mode)
        self._wanted[key] = adapter
        return {"$shape": key}

    def schemas(self) -> tuple[dict[tuple[str, JsonSchemaMode], JSON], JSON]:
        inputs = [(key[0], key[1], adapter) for key, adapter in self._wanted.items()]
        refs, defs = TypeAdapter.json_schemas(inputs, ref_template=_REF)
        return refs, defs.get("$defs", {})


def _query(model: type[BaseModel]) -> list[JSON]:
    """Query parameters, one per field of the model that reads them (generated, not typed)."""
    schema = model.model_json_schema()
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "description": prop.pop("description", ""),
            "schema": prop,
        }
        for name, prop in schema["properties"].items()
    ]


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def paths(shapes: Shapes) -> JSON:
    """The contract, by hand: method, path, who may call, which shape in and out."""

    def answer(data: Any) -> JSON:
        return shapes.ref(Envelope[data], "serialization")

    def body(shape: Any) -> JSON:
        return {
            "required": True,
            "content": {"application/json": {"schema": shapes.ref(shape, "validation")}},
        }

    def errors(*statuses: int) -> JSON:
        error = shapes.ref(ErrorEnvelope, "serialization")
        return {str(s): _json(error, _ERRORS[s]) for s in statuses}

    admin: list[JSON] = [{"adminToken": []}]
    instance_id = {"name": "instance_id", "in": "path", "required": True}
    return {
        "/api/v1/instances": {
            "post": {
                "summary": "Register an instance (the same configuration gives the same id).",
                "description": "Open to clients. With the admin token the registration is "
                "privileged (not subject to the registration caps); a wrong token is a 401.",
                "operationId": "registerInstance",
                "security": [{}, *admin],
                "requestBody": body(InstanceConfig),
                "responses": {
                    "200": _json(answer(Registration), "Already registered."),
                    "201": _json(answer(Registration), "Registered."),
                    **errors(400, 401, 403, 405, 415, 429, 503),
                },
            },
            "get": {
                "summary": "List instances, keys masked, a page at a time.",
                "operationId": "listInstances",
                "security": admin,
                "parameters": _query(ListQuery),
                "responses": {
                    "200": _json(answer(InstancePage), "The instances."),
                    **errors(400, 401, 429, 503),
                },
            },
        },
        "/api/v1/instances/{instance_id}": {
            "parameters": [instance_id | {"schema": {"type": "string"}}],
            "get": {
                "summary": "One instance, key masked, with usage counters.",
                "operationId": "showInstance",
                "security": admin,
                "responses": {
                    "200": _json(answer(InstanceView), "The instance."),
                    **errors(400, 401, 404, 429),
                },
            },
            "put": {
                "summary": "Change any field; the id stays.",
                "operationId": "updateInstance",
                "security": admin,
                "requestBody": body(InstanceUpdate),
                "responses": {
                    "200": _json(answer(InstanceView), "Updated."),
                    **errors(400, 401, 403, 404, 409, 415, 429, 503),
                },
            },
            "delete": {
                "summary": "Remove an instance.",
                "operationId": "deleteInstance",
                "security": admin,
                "responses": {
                    "200": _json(answer(Deleted), "Deleted."),
                    **errors(400, 401, 404, 409, 429, 503),
                },
            },
        },
        "/api/v1/instances/{instance_id}/secret": {
            "parameters": [instance_id | {"schema": {"type": "string"}}],
            "post": {
                "summary": "A new instance secret, shown once; the old one stops working.",
                "operationId": "rotateInstanceSecret",
                "security": admin,
                "responses": {
                    "200": _json(answer(SecretRotated), "The new secret."),
                    **errors(400, 401, 404, 409, 429, 503),
                },
            },
            "delete": {
                "summary": "Revoke the instance secret (a shared gateway then binds nothing).",
                "operationId": "revokeInstanceSecret",
                "security": admin,
                "responses": {
                    "200": _json(answer(SecretRevoked), "Revoked."),
                    **errors(400, 401, 404, 409, 429, 503),
                },
            },
        },
        "/relay/v1/chat/completions": {
            "post": {
                "summary": "OpenAI Chat Completions, sent to the baggage instance's provider.",
                "operationId": "relayChatCompletions",
                "security": [{"relayToken": []}],
                "parameters": [
                    {
                        "name": "baggage",
                        "in": "header",
                        "required": False,
                        "description": "W3C baggage; member powermem.instance picks the instance.",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": body(ChatRequest),
                "responses": {
                    "200": {
                        "description": "The completion (JSON, or SSE chunks when stream is true).",
                        "content": {
                            "application/json": {
                                "schema": shapes.ref(ChatCompletion, "serialization")
                            },
                            # chat.completion.chunk events, then `data: [DONE]`.
                            "text/event-stream": {"schema": {}},
                        },
                    },
                    "default": _json(
                        shapes.ref(OpenAIError, "serialization"), "An error in OpenAI's shape."
                    ),
                },
            }
        },
        "/gateway/health": {
            "get": {
                "summary": "The gateway answers.",
                "operationId": "health",
                "responses": {"200": _json(answer(Health), "Up.")},
            }
        },
        "/gateway/ready": {
            "get": {
                "summary": "Ready: a memory call through to powermem works (503 until it does).",
                "operationId": "ready",
                "responses": {"200": _json(answer(Ready), "Ready."), **errors(503)},
            }
        },
        "/gateway/status": {
            "get": {
                "summary": "Health; with the admin token also upstream, relay and instance count.",
                "operationId": "status",
                "security": [{}, *admin],
                "responses": {"200": _json(answer(Status), "Status."), **errors(401, 429)},
            }
        },
        "/gateway/probe": {
            "post": {
                "summary": "Prove that powermem's LLM calls reach the relay with baggage.",
                "operationId": "probe",
                "security": admin,
                "responses": {
                    "200": _json(answer(ProbeResult), "Probe result."),
                    **errors(401, 429),
                },
            }
        },
        "/gateway/probe/{instance_id}": {
            "parameters": [instance_id | {"schema": {"type": "string"}}],
            "post": {
                "summary": "A one-token call to the instance's provider, with its key.",
                "operationId": "probeProvider",
                "security": admin,
                "responses": {
                    "200": _json(answer(ProviderProbe), "What the provider answered."),
                    **errors(400, 401, 404, 409, 429),
                },
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "operationId": "metrics",
                "security": admin,
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **errors(401, 429),
                },
            }
        },
        "/gateway/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }
