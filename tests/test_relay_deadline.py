"""One deadline bounds a relayed call, retries included, and the error says who and how long."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from gateway.errors import ProviderError
from gateway.providers import PROVIDERS
from gateway.relay.client import ProviderPool
from gateway.relay.target import Target

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def call(provider: web.Application, aiohttp_server: Any, **pool: Any) -> ProviderError:
    """One call through a `ProviderPool(**pool)` to `provider`; the error it ends with."""
    server = await aiohttp_server(provider)
    client = ProviderPool(**pool)
    try:
        await client.post(_target(str(server.make_url("/v1"))), CHAT)
    except ProviderError as exc:
        return exc
    finally:
        await client.close()
    raise AssertionError("the call succeeded")


def _target(url: str) -> Target:
    return Target(
        spec=PROVIDERS["openai"],
        model="m",
        api_key="sk-deadline-0123456789abcdef",
        base_url=url,
        instance_id="pmem-0123456789abcdef",
    )


async def test_a_provider_that_keeps_failing_is_given_up_at_the_deadline(
    aiohttp_server: Any,
) -> None:
    """503 after 503 with many retries allowed: the call ends near the deadline, not later."""
    calls = 0

    async def busy(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(
            {"error": {"message": "busy"}}, status=503, headers={"Retry-After": "0.1"}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", busy)
    started = time.monotonic()
    error = await call(app, aiohttp_server, timeout=5.0, retries=50, deadline=0.6)
    assert error.status == 503 and "openai" in error.message
    # Without the deadline all 51 attempts would be made (about 5 s of Retry-After alone).
    assert 2 <= calls < 20
    assert time.monotonic() - started < 5.0


async def test_a_provider_that_never_answers_times_out_at_the_deadline_naming_it(
    aiohttp_server: Any,
) -> None:
    """No answer at all: a 504 once the deadline has passed, saying which provider and when."""

    async def silent(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", silent)
    started = time.monotonic()
    error = await call(app, aiohttp_server, timeout=10.0, retries=5, deadline=0.5)
    # Not the provider's 30 s, nor 6 attempts × 10 s: the deadline.
    assert time.monotonic() - started < 10.0
    assert error.status == 504 and error.error_type == "timeout"
    assert "openai did not answer within" in error.message
    assert "relay deadline 0.5s" in error.message
