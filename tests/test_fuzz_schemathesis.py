"""Schemathesis against a live gateway: no 5xx, and every answer in its documented shape.

The gateway runs with real fake providers (the default LLM and the registered instances answer
for real), so valid relay calls go all the way through; each relay case is also sent as an
Anthropic instance, which puts every fuzzed body through the OpenAI→Anthropic translation.
Bounded: a few dozen examples per operation, derandomised, well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from gateway.http.openapi import openapi_document
from tests.binding import in_flight
from tests.live import LiveGateway

RELAY_TOKEN = "pgr-fuzz-relay-token-0123456789abcdef"
ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
INSTANCE_KEY = "sk-fuzz-instance-0123456789abcdef"

schema = schemathesis.openapi.from_dict(openapi_document())
# Invalid calls too (bodies breaking the schema, wrong types, missing fields): a 4xx each.
schema.config.generation.update(modes=list(schemathesis.GenerationMode))


class Live:
    gateway: LiveGateway
    anthropic_id: str
    openai_id: str
    # The baggage of a request in flight for the Anthropic instance (see tests.binding).
    anthropic_baggage: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    with LiveGateway(root, relay_token=RELAY_TOKEN, admin_token=ADMIN_TOKEN) as gateway:
        state = Live()
        state.gateway = gateway
        for provider, fake, attr in (
            ("anthropic", gateway.anthropic, "anthropic_id"),
            ("openai", gateway.openai, "openai_id"),
        ):
            response = requests.post(
                gateway.url + "/api/v1/instances",
                json={
                    "provider": provider,
                    "model": f"{provider}-model",
                    "api_key": INSTANCE_KEY,
                    "base_url": fake.url,
                },
                timeout=10,
            )
            assert response.status_code == 201, response.text
            setattr(state, attr, response.json()["data"]["instance_id"])

        async def baggage() -> str:
            return in_flight(gateway.app, state.anthropic_id)

        state.anthropic_baggage = gateway.run(baggage)
        yield state


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every JSON error is in the envelope of its route: OpenAI's on the relay, ours elsewhere."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    if case.operation.path.startswith("/relay/"):
        error = body["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
    else:
        assert body["success"] is False
        assert set(body["error"]) == {"code", "message", "details"}
        assert isinstance(body["error"]["details"], dict)
        assert isinstance(body["timestamp"], str)
    for secret in (RELAY_TOKEN, ADMIN_TOKEN, INSTANCE_KEY):
        assert secret not in response.content.decode("utf-8", "replace")
    return True


CHECKS = [not_a_server_error, response_schema_conformance, error_shape]


def _auth(case: Any) -> dict[str, str]:
    token = RELAY_TOKEN if case.operation.path.startswith("/relay/") else ADMIN_TOKEN
    return {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_gateway_endpoints_survive_fuzzing(case: Any, live: Live) -> None:
    """Generated valid and invalid calls never get a 5xx or a response outside the schema."""
    base = live.gateway.url
    case.call_and_validate(base_url=base, headers=_auth(case), checks=CHECKS, timeout=15)
    if case.operation.path.startswith("/relay/"):
        anthropic = {**_auth(case), "baggage": live.anthropic_baggage}
        case.call_and_validate(base_url=base, headers=anthropic, checks=CHECKS, timeout=15)


async def test_openapi_document_is_served_and_covers_every_gateway_route(gateway: Any) -> None:
    """`GET /gateway/openapi.json` is the document fuzzed here, and names every own route."""
    response = await gateway.get("/gateway/openapi.json")
    assert response.status == 200
    served = await response.json()
    assert served == json.loads(json.dumps(openapi_document()))
    assert served["openapi"].startswith("3.1")
    own = {
        (route.method.lower(), route.resource.canonical)
        for route in gateway.server.app.router.routes()
        if route.resource is not None
        and route.method not in ("*", "HEAD")
        and not route.resource.canonical.startswith("/{tail")
    }
    # The relay is served by the front itself, not by an aiohttp route.
    own.add(("post", "/relay/v1/chat/completions"))
    documented = {
        (method, path)
        for path, item in served["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert own == documented
