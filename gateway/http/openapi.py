"""`GET /gateway/openapi.json`: the gateway's own endpoints, described for people and fuzzers.

Hand-written rather than generated, so the document says exactly what the contract promises
(DESIGN.md §3): the management API in powermem's envelope, the relay in OpenAI's shapes, and
the gateway's health, status, probe and metrics. Everything else on the gateway is powermem's
own API, passed through, and described by powermem.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.providers import provider_names

__all__ = ["openapi_document", "routes"]

routes = web.RouteTableDef()

JSON = dict[str, Any]
_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _success(data: JSON) -> JSON:
    """powermem's success envelope around `data`."""
    return {
        "type": "object",
        "required": ["success", "data", "message", "timestamp"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": data,
            "message": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    }


def _errors(*statuses: int, shape: str = "ErrorEnvelope") -> JSON:
    text = {
        400: "Invalid input; nothing changed.",
        401: "Missing or wrong token.",
        404: "No such instance.",
        405: "Method not supported on this path.",
        409: "Conflicts with another or a read-only instance.",
        429: "Rate limited.",
        500: "Internal error.",
        502: "Provider or upstream unreachable or failed.",
        503: "Storage or provider unavailable.",
        504: "Provider or upstream timed out.",
    }
    return {str(s): _json(_ref(shape), text.get(s, "Error.")) for s in statuses}


_STRING_FIELD = {"type": "string", "maxLength": 4096}

_SCHEMAS: JSON = {
    "ErrorEnvelope": {
        "type": "object",
        "required": ["success", "error", "timestamp"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            },
            "timestamp": {"type": "string", "format": "date-time"},
        },
    },
    "InstanceInput": {
        "type": "object",
        "description": "An instance configuration. api_key is sent once and never shown again.",
        "additionalProperties": False,
        "required": ["provider", "model"],
        "properties": {
            "client": {"type": "string", "description": "A label such as claude-code."},
            "provider": {"type": "string", "enum": provider_names()},
            "model": {"type": "string"},
            "api_key": _STRING_FIELD,
            "base_url": {"type": "string", "description": "http(s) URL; empty for the default."},
        },
    },
    "InstanceUpdate": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "client": {"type": "string"},
            "provider": {"type": "string", "enum": provider_names()},
            "model": {"type": "string"},
            "api_key": _STRING_FIELD,
            "base_url": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "properties": {
            "requests": {"type": "integer"},
            "errors": {"type": "integer"},
            "relay_calls": {"type": "integer"},
            "relay_errors": {"type": "integer"},
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "llm_errors": {"type": "integer"},
            "last_used_at": {"type": ["string", "null"]},
            "last_llm_error": {
                "type": ["object", "null"],
                "properties": {
                    "status": {"type": "integer"},
                    "reason": {"type": "string"},
                    "at": {"type": "string"},
                },
            },
            "last_24h": {
                "type": "array",
                "maxItems": 24,
                "items": {
                    "type": "object",
                    "properties": {
                        "hour": {"type": "string"},
                        "llm_calls": {"type": "integer"},
                        "llm_errors": {"type": "integer"},
                    },
                },
            },
        },
    },
    "Instance": {
        "type": "object",
        "required": [
            "instance_id",
            "client",
            "provider",
            "model",
            "api_key",
            "base_url",
            "source",
            "read_only",
            "created_at",
            "updated_at",
        ],
        "properties": {
            "instance_id": {"type": "string", "pattern": _ID_PATTERN},
            "client": {"type": "string"},
            "provider": {"type": "string"},
            "model": {"type": "string"},
            "api_key": {
                "type": "string",
                "description": "Masked: at most the first and last four characters.",
                "maxLength": 9,
            },
            "base_url": {"type": "string"},
            "source": {"type": "string", "enum": ["api", "implicit", "yaml"]},
            "read_only": {"type": "boolean"},
            "has_secret": {"type": "boolean"},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "usage": _ref("Usage"),
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {"type": ["string", "array", "null"]},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "tool_call_id": {"type": "string"},
        },
    },
    "ChatRequest": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "model": {"type": "string", "description": "Replaced by the instance's model."},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean"},
            "response_format": {"type": "object"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "tool_choice": {},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["object", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {"type": "object"},
                        "finish_reason": {"type": ["string", "null"]},
                    },
                },
            },
            "usage": {"type": "object"},
        },
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": ["string", "null"]},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
}

_INSTANCE_ID_PARAM = {
    "name": "instance_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_ADMIN: list[JSON] = [{"adminToken": []}, {}]


def _paths() -> JSON:
    instance = _success(_ref("Instance"))
    return {
        "/api/v1/instances": {
            "post": {
                "summary": "Register an instance (the same configuration gives the same id).",
                "operationId": "registerInstance",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("InstanceInput")}},
                },
                "responses": {
                    "200": _json(_success({"type": "object"}), "Already registered."),
                    "201": _json(_success({"type": "object"}), "Registered."),
                    **_errors(400, 405, 503),
                },
            },
            "get": {
                "summary": "List instances, keys masked.",
                "operationId": "listInstances",
                "security": _ADMIN,
                "responses": {
                    "200": _json(
                        _success(
                            {
                                "type": "object",
                                "required": ["instances", "total"],
                                "properties": {
                                    "instances": {"type": "array", "items": _ref("Instance")},
                                    "total": {"type": "integer"},
                                },
                            }
                        ),
                        "The instances.",
                    ),
                    **_errors(401, 503),
                },
            },
        },
        "/api/v1/instances/{instance_id}": {
            "parameters": [_INSTANCE_ID_PARAM],
            "get": {
                "summary": "One instance, key masked, with usage counters.",
                "operationId": "showInstance",
                "security": _ADMIN,
                "responses": {"200": _json(instance, "The instance."), **_errors(400, 401, 404)},
            },
            "put": {
                "summary": "Change any field; the id stays.",
                "operationId": "updateInstance",
                "security": _ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("InstanceUpdate")}},
                },
                "responses": {
                    "200": _json(instance, "Updated."),
                    **_errors(400, 401, 404, 409, 503),
                },
            },
            "delete": {
                "summary": "Remove an instance.",
                "operationId": "deleteInstance",
                "security": _ADMIN,
                "responses": {
                    "200": _json(_success({"type": "object"}), "Deleted."),
                    **_errors(400, 401, 404, 409, 503),
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
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ChatRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "The completion (JSON, or SSE chunks when stream is true).",
                        "content": {
                            "application/json": {"schema": _ref("ChatCompletion")},
                            # chat.completion.chunk events, then `data: [DONE]`.
                            "text/event-stream": {"schema": {}},
                        },
                    },
                    "default": _json(_ref("OpenAIError"), "An error in OpenAI's shape."),
                },
            }
        },
        "/gateway/health": {
            "get": {
                "summary": "The gateway answers.",
                "operationId": "health",
                "responses": {"200": _json(_success({"type": "object"}), "Up.")},
            }
        },
        "/gateway/ready": {
            "get": {
                "summary": "Ready: a memory call through to powermem works (503 until it does).",
                "operationId": "ready",
                "responses": {
                    "200": _json(_success({"type": "object"}), "Ready."),
                    **_errors(503),
                },
            }
        },
        "/gateway/status": {
            "get": {
                "summary": "Upstream health, relay activity and instance count; never a key.",
                "operationId": "status",
                "responses": {"200": _json(_success({"type": "object"}), "Status.")},
            }
        },
        "/gateway/probe": {
            "post": {
                "summary": "Prove that powermem's LLM calls reach the relay with baggage.",
                "operationId": "probe",
                "security": _ADMIN,
                "responses": {
                    "200": _json(_success({"type": "object"}), "Probe result."),
                    **_errors(401),
                },
            }
        },
        "/gateway/probe/{instance_id}": {
            "parameters": [_INSTANCE_ID_PARAM],
            "post": {
                "summary": "A one-token call to the instance's provider, with its key.",
                "operationId": "probeProvider",
                "security": _ADMIN,
                "responses": {
                    "200": _json(_success({"type": "object"}), "What the provider answered."),
                    **_errors(400, 401, 404),
                },
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
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


def openapi_document() -> JSON:
    """The OpenAPI 3.1 description of the endpoints the gateway serves itself."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "powermem-gateway",
            "version": __version__,
            "description": (
                "Per-client LLM instances in front of one powermem server. Every other path is "
                "powermem's own API, forwarded."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "POWERMEM_GATEWAY_ADMIN_TOKEN, when the gateway sets one.",
                },
                "relayToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The relay token (data dir relay.token).",
                },
            },
        },
    }


@routes.get("/gateway/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
