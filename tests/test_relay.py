"""The relay: powermem's LLM calls reach the provider of the instance named in their baggage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.http.app import create_app
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import OperatorFactory
from tests.fakes.providers import FakeAnthropic, FakeOpenAI

RELAY_TOKEN = "pgr-test-relay-token-0123456789"
DEFAULT_KEY = "sk-default-key-0000111122223333"
ANTHROPIC_KEY = "sk-ant-instance-a-4444555566667777"
OPENAI_KEY = "sk-openai-instance-b-88889999aaaabbbb"
AUTH = {"Authorization": f"Bearer {RELAY_TOKEN}"}
CHAT = {"model": "whatever-powermem-asks", "messages": [{"role": "user", "content": "hello"}]}

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def default_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
async def relay_gateway(
    operator: OperatorFactory,
    make_settings: Callable[..., Settings],
    default_fake: FakeOpenAI,
    tmp_path: Path,
) -> Client:
    env_file = tmp_path / "powermem.env"
    env_file.write_text(
        "LLM_PROVIDER=openai\n"
        f"LLM_API_KEY={DEFAULT_KEY}\n"
        "LLM_MODEL=default-model\n"
        f"OPENAI_LLM_BASE_URL={default_fake.url}\n"
    )
    settings = make_settings(
        env_file=env_file, relay_token=RELAY_TOKEN, provider_retries=2, provider_timeout=0.5
    )
    client: Client = await operator(create_app(settings))
    return client


async def _register(gateway: Client, **config: str) -> str:
    response = await gateway.post("/api/v1/instances", json=config)
    assert response.status in (200, 201), await response.text()
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


async def _anthropic_instance(client: Client, fake: FakeAnthropic) -> str:
    return await _register(
        client,
        client="claude-code",
        provider="anthropic",
        model="claude-sonnet-4-6",
        api_key=ANTHROPIC_KEY,
        base_url=fake.url,
    )


async def _openai_instance(client: Client, fake: FakeOpenAI) -> str:
    return await _register(
        client,
        client="cursor",
        provider="openai",
        model="gpt-4o",
        api_key=OPENAI_KEY,
        base_url=fake.url,
    )


def _relay_headers(client: Client, instance_id: str | None = None) -> dict[str, str]:
    headers = dict(AUTH)
    if instance_id:
        headers["baggage"] = "other=1," + in_flight(client.server.app, instance_id) + ";prop=x"
        headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    return headers


async def test_relay_refuses_calls_without_its_token(
    relay_gateway: Client, default_fake: FakeOpenAI
) -> None:
    """A call without the relay token, or with a wrong one, gets 401 and reaches no provider."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": RELAY_TOKEN}):
        response = await relay_gateway.post(
            "/relay/v1/chat/completions", json=CHAT, headers=headers
        )
        assert response.status == 401
        body = await response.json()
        assert body["error"]["type"] == "authentication_error"
    assert default_fake.calls == []


async def test_call_without_baggage_uses_the_default_llm_of_the_env_file(
    relay_gateway: Client, default_fake: FakeOpenAI
) -> None:
    """No powermem.instance member: the .env's provider, model and key serve the call."""
    response = await relay_gateway.post("/relay/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status == 200
    assert (await response.json())["object"] == "chat.completion"
    (call,) = default_fake.calls
    assert call["authorization"] == f"Bearer {DEFAULT_KEY}"
    assert call["json"]["model"] == "default-model"


async def test_openai_instance_gets_its_own_key_and_model_and_nothing_else(
    relay_gateway: Client, openai_fake: FakeOpenAI, default_fake: FakeOpenAI
) -> None:
    """The instance's key and model replace powermem's; baggage, traceparent and token stay here."""
    instance_id = await _openai_instance(relay_gateway, openai_fake)
    response = await relay_gateway.post(
        "/relay/v1/chat/completions",
        json={**CHAT, "temperature": 0.1, "response_format": {"type": "json_object"}},
        headers=_relay_headers(relay_gateway, instance_id),
    )
    assert response.status == 200
    (call,) = openai_fake.calls
    assert call["authorization"] == f"Bearer {OPENAI_KEY}"
    assert call["json"]["model"] == "gpt-4o"
    assert call["json"]["temperature"] == 0.1
    assert call["json"]["response_format"] == {"type": "json_object"}
    for header in ("baggage", "traceparent", "tracestate"):
        assert header not in call["headers"]
    assert RELAY_TOKEN not in json.dumps(call)
    assert default_fake.calls == []


async def test_anthropic_instance_is_translated_both_ways(
    relay_gateway: Client, anthropic_fake: FakeAnthropic, default_fake: FakeOpenAI
) -> None:
    """An Anthropic instance gets a Messages API call with its key; the caller gets OpenAI JSON."""
    instance_id = await _anthropic_instance(relay_gateway, anthropic_fake)
    body = {
        **CHAT,
        "messages": [
            {"role": "system", "content": "You extract facts."},
            {"role": "user", "content": "I like tea."},
        ],
    }
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=body, headers=_relay_headers(relay_gateway, instance_id)
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    (call,) = anthropic_fake.calls
    assert call["path"] == "/v1/messages"
    assert call["x_api_key"] == ANTHROPIC_KEY
    assert call["authorization"] is None
    assert call["headers"]["anthropic-version"] == "2023-06-01"
    assert call["json"]["model"] == "claude-sonnet-4-6"
    assert call["json"]["system"] == "You extract facts."
    assert call["json"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "I like tea."}]}
    ]
    assert "baggage" not in call["headers"]
    assert default_fake.calls == []


async def test_streamed_openai_answer_passes_through_byte_for_byte(
    relay_gateway: Client, openai_fake: FakeOpenAI
) -> None:
    """An OpenAI-compatible stream reaches the caller exactly as the provider sent it."""
    instance_id = await _openai_instance(relay_gateway, openai_fake)
    direct = await _post_raw(
        openai_fake.url + "/chat/completions", {**CHAT, "stream": True, "model": "gpt-4o"}
    )
    response = await relay_gateway.post(
        "/relay/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers=_relay_headers(relay_gateway, instance_id),
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    relayed = await response.read()
    assert _strip_created(relayed) == _strip_created(direct)
    assert relayed.endswith(b"data: [DONE]\n\n")


async def _post_raw(url: str, body: dict[str, Any]) -> bytes:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return await response.read()


def _strip_created(raw: bytes) -> bytes:
    import re

    return re.sub(rb'"created": \d+', b'"created": 0', raw)


async def test_streamed_anthropic_answer_becomes_openai_chunks(
    relay_gateway: Client, anthropic_fake: FakeAnthropic
) -> None:
    """Anthropic's event stream is translated into chat.completion.chunk events and [DONE]."""
    instance_id = await _anthropic_instance(relay_gateway, anthropic_fake)
    response = await relay_gateway.post(
        "/relay/v1/chat/completions",
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        headers=_relay_headers(relay_gateway, instance_id),
    )
    assert response.status == 200
    raw = (await response.read()).decode()
    events = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text  # the fake's answer, reassembled
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert anthropic_fake.calls[0]["json"]["stream"] is True


async def test_unknown_instance_gets_an_openai_error_and_no_provider_call(
    relay_gateway: Client, default_fake: FakeOpenAI
) -> None:
    """An id nobody registered never falls back to the default LLM."""
    response = await relay_gateway.post(
        "/relay/v1/chat/completions",
        json=CHAT,
        headers=_relay_headers(relay_gateway, "pmem-0000000000000000"),
    )
    assert response.status == 404
    error = (await response.json())["error"]
    assert "pmem-0000000000000000" in error["message"]
    assert error["type"] == "not_found_error"
    assert default_fake.calls == []


async def test_provider_5xx_is_retried_then_succeeds(
    relay_gateway: Client, openai_fake: FakeOpenAI
) -> None:
    """Two 503s then success: the caller sees one good answer, the provider three calls."""
    instance_id = await _openai_instance(relay_gateway, openai_fake)
    openai_fake.fail(503, times=2)
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=CHAT, headers=_relay_headers(relay_gateway, instance_id)
    )
    assert response.status == 200
    assert len(openai_fake.calls) == 3


async def test_provider_errors_come_back_in_openai_shape_with_its_status(
    relay_gateway: Client, openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic
) -> None:
    """A 400 is not retried; a persistent 503 is retried a bounded number of times."""
    openai_id = await _openai_instance(relay_gateway, openai_fake)
    openai_fake.fail(400, times=1)
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=CHAT, headers=_relay_headers(relay_gateway, openai_id)
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert "injected failure 400" in error["message"]
    assert len(openai_fake.calls) == 1

    anthropic_id = await _anthropic_instance(relay_gateway, anthropic_fake)
    anthropic_fake.fail(503, times=10)
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=CHAT, headers=_relay_headers(relay_gateway, anthropic_id)
    )
    assert response.status == 503
    assert (await response.json())["error"]["message"].startswith("anthropic returned 503")
    assert len(anthropic_fake.calls) == 3  # the first call and two retries


async def test_provider_that_never_answers_times_out_with_504(
    relay_gateway: Client, aiohttp_server: Any
) -> None:
    """A provider slower than the timeout gives 504, after the bounded retries."""
    import asyncio

    calls = 0

    async def stall(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stall)
    server = await aiohttp_server(app)
    instance_id = await _register(
        relay_gateway,
        provider="openai",
        model="m",
        api_key="sk-slow-0123456789abcdef",
        base_url=str(server.make_url("/v1")),
    )
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=CHAT, headers=_relay_headers(relay_gateway, instance_id)
    )
    assert response.status == 504
    assert (await response.json())["error"]["type"] == "timeout"
    assert calls == 3


async def test_provider_redirect_is_not_followed(
    relay_gateway: Client, aiohttp_server: Any, openai_fake: FakeOpenAI
) -> None:
    """A redirect could carry the key elsewhere: the relay reports it instead of following."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(openai_fake.url + "/chat/completions")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", redirect)
    server = await aiohttp_server(app)
    instance_id = await _register(
        relay_gateway,
        provider="openai",
        model="m",
        api_key="sk-redirect-0123456789abcdef",
        base_url=str(server.make_url("/v1")),
    )
    response = await relay_gateway.post(
        "/relay/v1/chat/completions", json=CHAT, headers=_relay_headers(relay_gateway, instance_id)
    )
    assert response.status == 502
    assert "redirect" in (await response.json())["error"]["message"]
    assert openai_fake.calls == []


async def test_relay_usage_is_counted_per_instance(
    relay_gateway: Client, anthropic_fake: FakeAnthropic
) -> None:
    """Calls and tokens show up on the instance, with its last-used time."""
    instance_id = await _anthropic_instance(relay_gateway, anthropic_fake)
    for _ in range(2):
        response = await relay_gateway.post(
            "/relay/v1/chat/completions",
            json=CHAT,
            headers=_relay_headers(relay_gateway, instance_id),
        )
        assert response.status == 200
    shown = await (await relay_gateway.get(f"/api/v1/instances/{instance_id}")).json()
    usage = shown["data"]["usage"]
    assert usage["relay_calls"] == 2
    assert usage["prompt_tokens"] == 20
    assert usage["completion_tokens"] == 10
    assert usage["last_used_at"]


async def test_malformed_relay_body_is_refused_without_a_provider_call(
    relay_gateway: Client, default_fake: FakeOpenAI
) -> None:
    """Not JSON, or no messages: 400 in OpenAI's error shape."""
    for data in (b"{not json", b"[]", b'{"messages": []}'):
        response = await relay_gateway.post(
            "/relay/v1/chat/completions",
            data=data,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    assert default_fake.calls == []
