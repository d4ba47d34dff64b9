"""`doctor` against running gateways: good chains pass, broken relay wiring is reported, and
each tool's knob is checked the way the tool would use it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.clients.doctorrun import run_doctor
from gateway.clients.gatewayapi import GatewayAPI
from gateway.http.app import create_app
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import ADMIN_TOKEN
from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import PowermemFactory

pytest_plugins = ["tests.conftest_powermem"]

RELAY_TOKEN = "relay-token-for-tests"
KEY = "sk-openai-doctor-0123456789abcdef"
WIRING = "upstream LLM wired to the relay"


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def doctor(url: str, *args: str, **env: str) -> Result:
    """Run `powermem-gateway doctor` in a thread against the in-process gateway, with the
    admin token the test gateways have unless `env` says otherwise (an empty value: none)."""
    argv = ["doctor", "--gateway", url, *args]
    env = {"POWERMEM_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN} | env
    return await asyncio.to_thread(
        CliRunner().invoke, cli, argv, env={k: v or None for k, v in env.items()}
    )


def line(output: str, step: str) -> str:
    [found] = [row for row in output.splitlines() if step in row and not row.startswith("→")]
    return found


async def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json()


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def server(gateway_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    """A gateway in front of the recording fake upstream, which never calls the relay."""
    started: TestServer = await gateway_server(create_app(make_settings(relay_token=RELAY_TOKEN)))
    return started


async def register_codex(url: str, provider: FakeOpenAI, home: Path, **env: str) -> str:
    """`register --client codex` against the gateway at `url`, with the fake as its provider."""
    argv = ["register", "--client", "codex", "--provider", "openai", "--model", "gpt-test"]
    argv += ["--base-url", provider.url, "--api-key-env", "K", "--gateway", url]
    result = await asyncio.to_thread(CliRunner().invoke, cli, argv, env={"K": KEY, **env})
    assert result.exit_code == 0, result.output
    return (home / ".codex" / "powermem-instance.id").read_text().strip()


async def test_unreachable_gateway_is_broken_with_a_fix() -> None:
    """Nothing listening: the first step fails, says how to start it, exit code 1."""
    result = await doctor("http://127.0.0.1:9")
    assert result.exit_code == 1
    assert line(result.output, "gateway reachable").startswith("FAIL")
    assert "powermem-gateway serve" in result.output
    assert "Verdict: broken" in result.output


async def test_upstream_that_never_calls_the_relay_is_reported_broken(server: TestServer) -> None:
    """The probe's memory add reaches powermem but no LLM call reaches the relay."""
    result = await doctor(url_of(server))
    assert result.exit_code == 1, result.output
    assert line(result.output, "gateway reachable").startswith("ok")
    assert line(result.output, "upstream healthy").startswith("ok")
    assert line(result.output, WIRING).startswith("FAIL")
    assert "relay not reached" in line(result.output, WIRING)
    assert "powermem-gateway upstream-env" in result.output
    assert line(result.output, "coding tools").startswith("WARN")


async def test_without_the_admin_token_doctor_sees_health_only_and_says_so(
    gateway_server: Any,
    make_settings: Callable[..., Settings],
    provider: FakeOpenAI,
    clean_env: Path,
) -> None:
    """A closed gateway shows a stranger its health only: the wiring is unknown, not guessed."""
    started: TestServer = await gateway_server(
        create_app(make_settings(relay_token=RELAY_TOKEN, admin_token="admin-secret-token"))
    )
    url = url_of(started)
    instance_id = await register_codex(
        url, provider, clean_env, POWERMEM_GATEWAY_ADMIN_TOKEN="admin-secret-token"
    )
    status, _ = await post(
        url + "/relay/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
        {"Authorization": f"Bearer {RELAY_TOKEN}", "baggage": in_flight(started.app, instance_id)},
    )
    assert status == 200
    result = await doctor(url, POWERMEM_GATEWAY_ADMIN_TOKEN="")
    assert result.exit_code == 0, result.output
    assert "details need the admin token" in line(result.output, "upstream healthy")
    assert line(result.output, WIRING).startswith("WARN")
    assert "POWERMEM_GATEWAY_ADMIN_TOKEN" in result.output
    assert instance_id in line(result.output, "codex id")
    assert "Verdict: good" in result.output


async def test_forgotten_saved_id_and_failing_provider_are_broken(
    server: TestServer, provider: FakeOpenAI, clean_env: Path
) -> None:
    """A saved id the gateway lost, and a provider that errors, each fail with a fix."""
    url = url_of(server)
    await register_codex(url, provider, clean_env)
    stale = clean_env / ".powermem" / "instance.id"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text("pmem-0000000000000000\n")
    provider.fail(401, times=10)
    api = GatewayAPI(url, admin_token=ADMIN_TOKEN)
    async with api:
        verdicts = await run_doctor(
            api,
            home=clean_env,
            environ={},
            env_file=clean_env / ".powermem" / ".env",
            probe_providers=True,
        )
    by_step = {v.step: v for v in verdicts}
    assert by_step["claude-code id"].state == "fail"
    assert "register --client claude-code" in by_step["claude-code id"].fix
    assert by_step["codex id"].state == "ok"
    assert by_step["codex provider"].state == "fail"
    assert "provider refused (HTTP 401)" in by_step["codex provider"].detail
    assert KEY not in str(verdicts)

    provider.fail(401, times=0)
    result = await doctor(url, "--probe-providers")
    assert line(result.output, "codex provider").startswith("ok")
    assert provider.calls_to("/chat/completions")[-1]["authorization"] == f"Bearer {KEY}"


async def test_admin_token_gateway_without_token_warns_instead_of_guessing(
    gateway_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """The probe needs the admin token: without it the wiring is unknown, a warning."""
    server = await gateway_server(create_app(make_settings(admin_token="adm")))
    result = await doctor(url_of(server), POWERMEM_GATEWAY_ADMIN_TOKEN="")
    assert line(result.output, WIRING).startswith("WARN")
    assert "unknown: no relay call seen yet" in result.output
    with_token = await doctor(url_of(server), POWERMEM_GATEWAY_ADMIN_TOKEN="adm")
    assert line(with_token.output, WIRING).startswith("FAIL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.e2e
async def test_stock_powermem_wired_to_the_relay_is_good(
    gateway_server: Any,
    make_settings: Callable[..., Settings],
    powermem_factory: PowermemFactory,
) -> None:
    """The real server, its LLM at the gateway's relay: the probe proves the wiring."""
    port = free_port()
    powermem = await powermem_factory(f"http://127.0.0.1:{port}/relay/v1", llm_key=RELAY_TOKEN)
    settings = make_settings(upstream=powermem.url, relay_token=RELAY_TOKEN, port=port)
    server = await gateway_server(create_app(settings), port=port)
    result = await doctor(url_of(server))
    assert result.exit_code == 0, result.output
    assert line(result.output, WIRING).startswith("ok")
    assert "reached the relay" in line(result.output, WIRING)


@pytest.mark.e2e
async def test_stock_powermem_calling_its_provider_directly_is_broken(
    gateway_server: Any,
    make_settings: Callable[..., Settings],
    powermem_factory: PowermemFactory,
    fake_llm: FakeOpenAI,
) -> None:
    """The real server, its LLM at a provider instead of the relay: reported broken."""
    powermem = await powermem_factory(fake_llm.url)
    server = await gateway_server(create_app(make_settings(upstream=powermem.url)))
    result = await doctor(url_of(server))
    assert result.exit_code == 1, result.output
    assert line(result.output, WIRING).startswith("FAIL")
    assert fake_llm.calls_to("/chat/completions"), "powermem called its provider directly"
