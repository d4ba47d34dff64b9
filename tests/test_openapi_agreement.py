"""The OpenAPI document and the API agree both ways, proven from the document itself.

Documented ⇒ enforced: for every constraint of every request schema (type, required, unknown
fields, enum, pattern, length, the cross-field rules) a value that breaks exactly that
constraint is sent, and the API must refuse it with a 400. Enforced ⇒ documented: bodies
generated from the schemas alone (hypothesis, regexes included), and every length at its
documented limit, must be accepted. A keyword this file does not know fails the first test,
so a new constraint cannot be added to a shape without being checked here.

The relay's body is checked against `parse_chat_request`, the function the relay uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, assume, find, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidBody
from gateway.http.openapi import openapi_document
from gateway.relay.body import parse_chat_request
from tests.live import LiveGateway

ADMIN_TOKEN = "agreement-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DOC = openapi_document()
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
# Every keyword a request schema may use; each one is generated and broken below.
CHECKED = {
    "type", "properties", "required", "additionalProperties", "minProperties", "allOf", "if",
    "then", "enum", "pattern", "minLength", "maxLength", "items", "minItems", "$ref",
    "title", "description", "default",
}  # fmt: skip
REQUEST_SCHEMAS = ("InstanceConfig", "InstanceUpdate", "ChatRequest")
# Strings that trip patterns in the ways people and attackers do; each is used wherever it
# breaks the pattern of a field (and keeps its lengths), so every pattern meets several.
TRICKY = [
    "", " ", " lead", "trail ", "in\tside", "two\nlines", "nul\x00", "del\x7f", "sep\u2028",
    "nbsp\xa0", "café", "has space", "x" * 65, "-dash", "ftp://h.example", "https://",
    "http://h:65536/v1", "http://h:0x50/", "http://[127.0.0.1]/", "http://[::1%25eth0]/",
    "http://[1::2::3]/", "http://u:p@h.example/v1", "http://h.example/v1?key=k",
    "http://h.example/v1#f", "http://h.example/a b", "http://h\\.example/", "http://h%41.ex/",
    "javascript:alert(1)", "//h.example/v1", "http:/h.example", "pmem-x!",
]  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    root: Path = tmp_path_factory.mktemp("agreement")
    with LiveGateway(root, admin_token=ADMIN_TOKEN) as gateway:
        yield gateway


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return resolve(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    return schema


def keywords(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key in ("properties",):
                for sub in value.values():
                    yield from keywords(sub)
            elif key in ("items", "if", "then"):
                yield from keywords(value)
            elif key == "allOf":
                for sub in value:
                    yield from keywords(sub)


# -- what the document says, turned into values ---------------------------------------------


def fits(value: Any, prop: dict[str, Any]) -> bool:
    """Whether a string value satisfies every documented constraint of `prop`."""
    if not isinstance(value, str):
        return False
    if "enum" in prop and value not in prop["enum"]:
        return False
    if "pattern" in prop and not re.fullmatch(prop["pattern"], value):
        return False
    return prop.get("minLength", 0) <= len(value) <= prop.get("maxLength", len(value))


def strings(prop: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in prop:
        return st.sampled_from(prop["enum"]).filter(lambda v: fits(v, prop))
    base = st.from_regex(prop["pattern"], fullmatch=True) if "pattern" in prop else st.text()
    return base.filter(lambda v: fits(v, prop))


def rule_applies(rule: dict[str, Any], body: dict[str, Any]) -> bool:
    """JSON Schema `if` with `properties`: absent properties pass, present ones must fit."""
    conditions = rule["if"]["properties"]
    return all(name not in body or body[name] in c["enum"] for name, c in conditions.items())


def effective(schema: dict[str, Any], body: dict[str, Any], name: str) -> dict[str, Any]:
    """A property's constraints with those of every applying `then` merged in."""
    prop = dict(schema["properties"][name])
    for rule in schema.get("allOf", []):
        if rule_applies(rule, body):
            prop |= rule["then"].get("properties", {}).get(name, {})
    return prop


def required(schema: dict[str, Any], body: dict[str, Any]) -> set[str]:
    names = set(schema.get("required", []))
    for rule in schema.get("allOf", []):
        if rule_applies(rule, body):
            names |= set(rule["then"].get("required", []))
    return names


@st.composite
def bodies(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """A body the schema allows: required fields, some optional ones, rules honoured."""
    body: dict[str, Any] = {}
    for name in schema["properties"]:
        if name in schema.get("required", []) or draw(st.booleans()):
            body[name] = draw(strings(schema["properties"][name]))
    for _ in range(3):  # a value drawn for one rule can make another apply
        for name in sorted(required(schema, body)):
            prop = effective(schema, body, name)
            if not fits(body.get(name), prop):
                body[name] = draw(strings(prop))
        for name in list(body):
            prop = effective(schema, body, name)
            if not fits(body[name], prop):
                body[name] = draw(strings(prop))
    if len(body) < schema.get("minProperties", 0):
        name = draw(st.sampled_from(sorted(schema["properties"])))
        body[name] = draw(strings(effective(schema, body, name)))
    return body


def smallest(prop: dict[str, Any]) -> str:
    """The simplest non-empty value that fits (hypothesis shrinks to it, deterministically)."""
    found: str = find(strings(prop), lambda v: v != "", settings=settings(database=None))
    return found


def padded(prop: dict[str, Any], length: int) -> str:
    """A value of exactly `length` that fits `prop` except, perhaps, its maxLength."""
    loose = {k: v for k, v in prop.items() if k != "maxLength"}
    start = smallest(loose)
    for filler in "a0/._-":
        value = start + filler * (length - len(start))
        if fits(value, loose):
            return value
    raise AssertionError(f"no value of length {length} fits {prop}")


def violations(schema: dict[str, Any], base: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(what is broken, body) for every constraint the schema documents."""
    props: dict[str, Any] = schema["properties"]
    for name in schema.get("required", []):
        yield f"required {name}", {k: v for k, v in base.items() if k != name}
    if schema.get("additionalProperties") is False:
        yield "additionalProperties", base | {"unexpected_field": "x"}
    if schema.get("minProperties"):
        yield "minProperties", {}
    for name in props:
        prop = effective(schema, base, name)
        for wrong in (42, 1.5, None, True, [], {}):
            yield f"type of {name}", base | {name: wrong}
        if "maxLength" in prop:
            yield f"maxLength of {name}", base | {name: padded(prop, prop["maxLength"] + 1)}
        if prop.get("minLength"):
            yield f"minLength of {name}", base | {name: "x" * (prop["minLength"] - 1)}
        if "enum" in prop:
            yield f"enum of {name}", base | {name: "not-" + prop["enum"][0]}
        if "pattern" in prop:
            bounds = {k: v for k, v in prop.items() if k in ("minLength", "maxLength", "type")}
            for text in TRICKY:
                if fits(text, bounds) and not re.fullmatch(prop["pattern"], text):
                    yield f"pattern of {name}: {text!r}", base | {name: text}
    for rule in schema.get("allOf", []):
        for name, condition in rule["if"]["properties"].items():
            for member in condition["enum"]:
                body = base | {name: member}
                for needed in rule["then"].get("required", []):
                    yield (
                        f"{name}={member} needs {needed}",
                        {k: v for k, v in body.items() if k != needed},
                    )
                    yield f"{name}={member} needs a non-empty {needed}", body | {needed: ""}


# -- the tests -------------------------------------------------------------------------------


def test_every_keyword_of_a_request_schema_is_checked_here() -> None:
    """A constraint keyword this file cannot generate and break would go unproven."""
    for name in (*REQUEST_SCHEMAS, "ChatMessage"):
        unknown = set(keywords(SCHEMAS[name])) - CHECKED
        assert not unknown, f"{name} uses {unknown}: teach tests/test_openapi_agreement.py"


def register(live: LiveGateway, body: Any) -> requests.Response:
    return requests.post(live.url + "/api/v1/instances", json=body, headers=ADMIN, timeout=10)


def accepted(response: requests.Response) -> bool:
    """2xx, or the base-URL policy's 403 (a decision about the address, not the shape)."""
    if response.status_code == 403:
        return bool(response.json()["error"]["code"] == "BASE_URL_REFUSED")
    return 200 <= response.status_code < 300


def refused(response: requests.Response) -> bool:
    body = response.json()
    return response.status_code == 400 and body["error"]["code"] in (
        "INVALID_CONFIG",
        "INVALID_BODY",
    )


VALID_CONFIG = {"provider": "openai", "model": "gpt-test", "api_key": "sk-agreement-0123456789"}


@pytest.mark.parametrize(
    ("broken", "body"), list(violations(SCHEMAS["InstanceConfig"], VALID_CONFIG))
)
def test_each_documented_registration_constraint_is_enforced(
    live: LiveGateway, broken: str, body: Any
) -> None:
    """A registration that breaks one documented constraint is a 400 naming no value."""
    response = register(live, body)
    assert refused(response), (broken, response.status_code, response.text)
    assert VALID_CONFIG["api_key"] not in response.text


@pytest.mark.parametrize("name", ["model", "api_key", "base_url"])
def test_each_documented_length_limit_is_allowed_exactly(live: LiveGateway, name: str) -> None:
    """A value exactly as long as the document allows is accepted."""
    prop = SCHEMAS["InstanceConfig"]["properties"][name]
    response = register(live, VALID_CONFIG | {name: padded(prop, prop["maxLength"])})
    assert accepted(response), response.text


@given(body=bodies(SCHEMAS["InstanceConfig"]))
@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
def test_every_registration_the_document_allows_is_accepted(
    live: LiveGateway, body: dict[str, Any]
) -> None:
    """Generated from the schema alone, each body registers (no undocumented constraint)."""
    response = register(live, body)
    assert accepted(response), (body, response.text)


@pytest.fixture(scope="module")
def stored(live: LiveGateway) -> str:
    response = register(live, VALID_CONFIG | {"client": "agreement"})
    assert response.status_code in (200, 201)
    instance_id: str = response.json()["data"]["instance_id"]
    return instance_id


def update(live: LiveGateway, instance_id: str, body: Any) -> requests.Response:
    url = f"{live.url}/api/v1/instances/{instance_id}"
    return requests.put(url, json=body, headers=ADMIN, timeout=10)


@pytest.mark.parametrize(
    ("broken", "body"), list(violations(SCHEMAS["InstanceUpdate"], {"model": "gpt-test-2"}))
)
def test_each_documented_update_constraint_is_enforced(
    live: LiveGateway, stored: str, broken: str, body: Any
) -> None:
    """An update that breaks one documented constraint is a 400 and changes nothing."""
    before = requests.get(f"{live.url}/api/v1/instances/{stored}", headers=ADMIN, timeout=10)
    response = update(live, stored, body)
    assert refused(response), (broken, response.status_code, response.text)
    after = requests.get(f"{live.url}/api/v1/instances/{stored}", headers=ADMIN, timeout=10)
    assert after.json()["data"]["updated_at"] == before.json()["data"]["updated_at"]


@given(body=bodies(SCHEMAS["InstanceUpdate"]))
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
def test_every_update_the_document_allows_is_accepted(
    live: LiveGateway, stored: str, body: dict[str, Any]
) -> None:
    """Generated updates whose result is a valid configuration (the description's rule) apply."""
    start = VALID_CONFIG | {"client": "agreement", "base_url": ""}
    assert update(live, stored, start).status_code == 200
    merged = start | body
    config = SCHEMAS["InstanceConfig"]
    assume(all(fits(merged.get(n), effective(config, merged, n)) for n in required(config, merged)))
    moved = any(merged[n] != start[n] for n in ("provider", "base_url"))
    assume("api_key" in body or not moved)  # the description's other rule
    response = update(live, stored, body)
    assert accepted(response) or response.status_code == 409, (body, response.text)


# -- the relay body ---------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    message = st.dictionaries(st.text(), JSON_VALUES, max_size=3).map(
        lambda extra: extra | {"role": "user"}
    )
    messages = draw(st.lists(message, min_size=1, max_size=3))
    for m in messages:
        m["role"] = draw(st.text())
    body: dict[str, Any] = draw(st.dictionaries(st.text(), JSON_VALUES, max_size=4))
    body |= {"messages": messages}
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


@given(body=chat_bodies())
@settings(max_examples=200)
def test_every_relay_body_the_document_allows_is_accepted(body: dict[str, Any]) -> None:
    """Any JSON beside messages (objects with a string role) and a boolean stream passes."""
    import json

    assert parse_chat_request(json.dumps(body)) == body


CHAT_VIOLATIONS = [
    ("required messages", {"model": "m"}),
    ("type of messages", {"messages": {"role": "user"}}),
    ("minItems of messages", {"messages": []}),
    ("items are objects", {"messages": ["hello"]}),
    ("required role", {"messages": [{"content": "hi"}]}),
    ("type of role", {"messages": [{"role": 1}]}),
    ("type of role (null)", {"messages": [{"role": None}]}),
    ("type of stream", {"messages": [{"role": "user"}], "stream": "true"}),
    ("type of stream (null)", {"messages": [{"role": "user"}], "stream": None}),
    ("type of stream (1)", {"messages": [{"role": "user"}], "stream": 1}),
    ("body is an object", [{"role": "user"}]),
]


@pytest.mark.parametrize(("broken", "body"), CHAT_VIOLATIONS)
def test_each_documented_relay_constraint_is_enforced(broken: str, body: Any) -> None:
    """Each constraint of ChatRequest/ChatMessage, broken alone, is refused."""
    import json

    schema = SCHEMAS["ChatRequest"]
    assert schema["required"] == ["messages"] and schema["properties"]["messages"]["minItems"] == 1
    with pytest.raises(InvalidBody):
        parse_chat_request(json.dumps(body))
