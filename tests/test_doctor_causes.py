"""`doctor` never misleads: each broken chain is reported with its real cause and the fix.

Each stumble of issue 11 is built for real: a managed powermem whose storage cannot be built
(no `.env`, or one without storage), a powermem whose API-key auth refuses the gateway, one
that calls the relay without the request's baggage, and tools whose knob is missing, points
elsewhere, is overridden, or lacks its instance secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.http.app import create_app
from gateway.http.appkeys import REGISTRY
from gateway.instances.model import InstanceConfig
from gateway.settings import Settings
from tests.conftest import ADMIN_AUTH, ADMIN_TOKEN, REPO_ROOT
from tests.fakes.providers import FakeOpenAI
from tests.powermem_server import PowermemFactory

pytest_plugins = ["tests.conftest_powermem"]

RELAY_TOKEN = "relay-token-for-doctor-tests"
KEY = "sk-ant-doctor-0123456789abcdef"
WIRING = "upstream LLM wired to the relay"
BROKEN_POWERMEM = REPO_ROOT / "tests" / "fakes" / "brokenpowermem.py"


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def doctor(url: str, *args: str, **env: str) -> Result:
    argv = ["doctor", "--gateway", url, *args]
    # The CLI on the gateway's machine knows its admin token (here: the tests' one).
    env = {"POWERMEM_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, **env}
    return await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)


async def register(url: str, client: str, *extra: str) -> Result:
    argv = ["register", "--client", client, "--provider", "anthropic", "--model", "m"]
    argv += ["--api-key-env", "K", "--gateway", url, *extra]
    return await asyncio.to_thread(CliRunner().invoke, cli, argv, env={"K": KEY})


def line(output: str, step: str) -> str:
    [found] = [row for row in output.splitlines() if step in row and "→" not in row]
    return found


def fix_under(output: str, step: str) -> str:
    rows = output.splitlines()
    index = rows.index(line(output, step))
    return rows[index + 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def server(gateway_server: Any, make_settings: Callable[..., Settings]) -> TestServer:
    """A gateway in front of the recording fake upstream (answers 200, never calls the relay)."""
    started: TestServer = await gateway_server(create_app(make_settings()))
    return started


async def upstream_app(aiohttp_server: Any, routes: web.RouteTableDef) -> str:
    app = web.Application()
    app.add_routes(routes)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


# -- powermem itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_text", "cause", "fix"),
    [
        (None, "no .env: ", "powermem-gateway init"),
        (
            "EMBEDDING_PROVIDER=openai\n",
            "storage not initialised: DATABASE_PROVIDER",
            "SQLITE_PATH",
        ),
    ],
)
async def test_a_managed_powermem_that_cannot_store_names_its_env_as_the_cause(
    gateway_server: Any, tmp_path: Path, env_text: str | None, cause: str, fix: str
) -> None:
    """Health says 200, memory calls 503: doctor names what the .env lacks, not the LLM."""
    env_file = tmp_path / "powermem.env"
    if env_text is not None:
        env_file.write_text(env_text)
    settings = Settings(
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        instances_file=tmp_path / "instances.yaml",
        env_file=env_file,
        powermem_command=f"{sys.executable} {BROKEN_POWERMEM}",
    )
    server = await gateway_server(create_app(settings))
    result = await doctor(url_of(server), "--env-file", str(env_file))
    assert result.exit_code == 1, result.output
    assert line(result.output, "upstream healthy").startswith("ok")
    env_line = line(result.output, "powermem's .env")
    assert env_line.startswith("FAIL") and cause in env_line
    assert fix in fix_under(result.output, "powermem's .env")
    ready = line(result.output, "memory service ready")
    assert ready.startswith("FAIL") and "storage not initialised" in ready
    assert line(result.output, WIRING).startswith("skip")


async def test_powermem_auth_refusing_the_gateway_is_named(
    aiohttp_server: Any, gateway_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """powermem's API-key auth is on and the gateway has no key: said so, with the setting."""
    routes = web.RouteTableDef()

    @routes.get("/api/v1/system/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"status": "healthy"}})

    @routes.route("*", "/{tail:.*}")
    async def refuse(request: web.Request) -> web.Response:
        detail = {"code": "UNAUTHORIZED", "message": "API key required"}
        return web.json_response({"detail": detail}, status=401)

    upstream = await upstream_app(aiohttp_server, routes)
    server = await gateway_server(create_app(make_settings(upstream=upstream)))
    result = await doctor(url_of(server))
    assert result.exit_code == 1
    ready = line(result.output, "memory service ready")
    assert ready.startswith("FAIL") and "API-key auth refused the gateway" in ready
    assert "POWERMEM_SERVER_API_KEYS" in fix_under(result.output, "memory service ready")


async def test_uninstrumented_powermem_is_named_instrumentation_missing(
    aiohttp_server: Any, gateway_server: Any, make_settings: Callable[..., Settings]
) -> None:
    """Its LLM call reaches the relay without the request's baggage: not 'relay not reached'."""
    port = free_port()
    routes = web.RouteTableDef()

    @routes.post("/api/v1/memories")
    async def add(request: web.Request) -> web.Response:
        chat = {"model": "m", "messages": [{"role": "user", "content": "extract facts"}]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/relay/v1/chat/completions",
                json=chat,
                headers={"Authorization": f"Bearer {RELAY_TOKEN}"},  # and no baggage
            ) as answer,
        ):
            await answer.read()
        return web.json_response({"success": True, "data": []})

    @routes.route("*", "/{tail:.*}")
    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"status": "healthy"}})

    upstream = await upstream_app(aiohttp_server, routes)
    settings = make_settings(upstream=upstream, relay_token=RELAY_TOKEN, port=port)
    server = await gateway_server(create_app(settings), port=port)
    result = await doctor(url_of(server))
    assert result.exit_code == 1
    wiring = line(result.output, WIRING)
    assert wiring.startswith("FAIL") and "instrumentation missing" in wiring
    assert "opentelemetry-instrument" in fix_under(result.output, WIRING)


async def test_json_report_for_scripts(server: TestServer) -> None:
    """--json: every check with state, detail and fix; `ok` false and exit 1 when broken."""
    result = await doctor(url_of(server), "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["gateway"] == url_of(server) and report["ok"] is False
    steps = {c["step"]: c for c in report["checks"]}
    assert steps["gateway reachable"]["state"] == "ok"
    assert steps[WIRING]["state"] == "fail" and "relay not reached" in steps[WIRING]["detail"]
    assert steps[WIRING]["fix"]


async def test_the_admin_token_is_read_from_the_gateways_data_dir(
    gateway_server: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A closed gateway's admin.token in its data dir opens the probe, no variable needed."""
    token = "pga-doctor-admin-token-0123456789"
    server = await gateway_server(create_app(make_settings(admin_token=token)))
    data_dir = tmp_path / "gateway-data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "admin.token").write_text(token + "\n")
    os.chmod(data_dir / "admin.token", 0o600)
    without = await doctor(url_of(server), POWERMEM_GATEWAY_ADMIN_TOKEN="")
    assert line(without.output, WIRING).startswith("WARN")
    found = await doctor(
        url_of(server), "--data-dir", str(data_dir), POWERMEM_GATEWAY_ADMIN_TOKEN=""
    )
    assert line(found.output, WIRING).startswith("FAIL")  # the probe ran: relay not reached
    assert token not in found.output


# -- each tool's knob --------------------------------------------------------------------------


async def test_a_claude_code_knob_is_checked_the_way_its_hook_reads_it(
    server: TestServer, clean_env: Path
) -> None:
    """Good, overridden by settings.json, unscoped, another gateway, deleted: each named."""
    url = url_of(server)
    assert (await register(url, "claude-code")).exit_code == 0
    iid = (clean_env / ".powermem" / "instance.id").read_text().strip()
    step = "claude-code knob"
    good = await doctor(url)
    assert line(good.output, step).startswith("ok") and "answers" in line(good.output, step)

    settings = clean_env / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps({"env": {"POWERMEM_BASE_URL": "http://localhost:8848"}}))
    overridden = await doctor(url)
    assert line(overridden.output, step).startswith("FAIL")
    assert "wins over POWERMEM_BASE_URL" in line(overridden.output, step)
    settings.unlink()

    runtime = clean_env / ".powermem" / "runtime.env"
    runtime.write_text(f"POWERMEM_BASE_URL={url}\n")
    unscoped = await doctor(url)
    assert "not an instance-scoped URL" in line(unscoped.output, step)
    assert "register --client claude-code" in fix_under(unscoped.output, step)

    runtime.write_text(f"POWERMEM_BASE_URL=http://127.0.0.1:9/i/{iid}\n")
    elsewhere = await doctor(url)
    assert "another gateway (http://127.0.0.1:9)" in line(elsewhere.output, step)

    runtime.write_text(f"POWERMEM_BASE_URL={url}/i/{iid}\n")
    async with aiohttp.ClientSession() as session:
        await session.delete(f"{url}/api/v1/instances/{iid}", headers=ADMIN_AUTH)
    deleted = await doctor(url)
    assert f"instance {iid} is not registered" in line(deleted.output, step)
    assert line(deleted.output, "claude-code id").startswith("FAIL")


async def test_a_knob_without_its_instance_secret_is_named_on_a_shared_gateway(
    gateway_server: Any, make_settings: Callable[..., Settings], clean_env: Path
) -> None:
    """A wrong secret in the URL fails with that cause; the right one passes; neither shows."""
    server = await gateway_server(create_app(make_settings(shared=True)))
    url = url_of(server)
    config = InstanceConfig.parse(client="cursor", provider="anthropic", model="m", api_key=KEY)
    done = await server.app[REGISTRY].register(config)
    assert done.secret is not None
    iid = done.record.instance_id
    path = clean_env / ".cursor" / "mcp.json"
    path.parent.mkdir()
    step = "cursor (global) knob"
    for secret, state in (("pmis-wrong", "FAIL"), (done.secret, "ok")):
        entry = {"url": f"{url}/i/{iid}~{secret}/mcp"}
        path.write_text(json.dumps({"mcpServers": {"powermem": entry}}))
        result = await doctor(url)
        assert line(result.output, step).startswith(state), result.output
        assert secret not in result.output
    wrong = json.loads(path.read_text())
    assert wrong  # the file is only read


async def test_a_disabled_opencode_entry_is_a_warning(
    server: TestServer, clean_env: Path, fake_llm: FakeOpenAI
) -> None:
    """`"enabled": false` on the powermem entry: the URL works but OpenCode will not use it."""
    url = url_of(server)
    assert (await register(url, "opencode")).exit_code == 0
    path = clean_env / ".config" / "opencode" / "opencode.json"
    data = json.loads(path.read_text())
    data["mcp"]["powermem"]["enabled"] = False
    path.write_text(json.dumps(data))
    result = await doctor(url)
    assert line(result.output, "opencode knob").startswith("WARN")
    assert "disabled" in line(result.output, "opencode knob")


@pytest.mark.e2e
async def test_stock_powermem_with_its_auth_on_is_good(
    gateway_server: Any,
    make_settings: Callable[..., Settings],
    powermem_factory: PowermemFactory,
    tmp_path: Path,
) -> None:
    """powermem's API-key auth on: the gateway's calls carry its key, doctor says good."""
    auth = {"POWERMEM_SERVER_AUTH_ENABLED": "true", "POWERMEM_SERVER_API_KEYS": "pm-key-1"}
    port = free_port()
    powermem = await powermem_factory(
        f"http://127.0.0.1:{port}/relay/v1", llm_key=RELAY_TOKEN, extra_env=auth
    )
    env_file = tmp_path / "external.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in auth.items()))
    settings = make_settings(
        upstream=powermem.url, relay_token=RELAY_TOKEN, port=port, env_file=env_file
    )
    server = await gateway_server(create_app(settings), port=port)
    result = await doctor(url_of(server))
    assert line(result.output, "memory service ready").startswith("ok"), result.output
    assert line(result.output, WIRING).startswith("ok"), result.output
