"""At DEBUG, through the gateway's own formatters, no key or token reaches any byte we emit.

One realistic session runs with every logger (aiohttp's and asyncio's included) at DEBUG into
the gateway's JSON and text formatters: registrations explicit and implicit, proxied calls,
relay calls to OpenAI-compatible and Anthropic providers (plain and streamed), providers that
echo the key back in their errors, a provider that never answers, an upstream that is down,
key rotation, refused admin calls, and `doctor --probe-providers`. Then every captured byte —
log output, responses, the doctor's report and the data dir's files — is searched for every key.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from gateway.cli import cli
from gateway.http.app import create_app
from gateway.observe.logs import JsonFormatter, TextFormatter
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import free_port
from tests.fakes.providers import FakeAnthropic, FakeOpenAI
from tests.frontserver import GatewayTestServer

Client = TestClient[web.Request, web.Application]

RELAY_TOKEN = "relay-Token-withNoKnownShape-5f1c2e9a7b"
ADMIN_TOKEN = "admin-Token-withNoKnownShape-0d8e4a6c2f"
DEFAULT_KEY = "sk-default-3Hq8Lm2Zx7Cv5Bn1Kp9W"
OPENAI_KEY = "sk-proj-openai-4Jr9Mn3Ay8Dw6Co2Lq0X"
IMPLICIT_KEY = "sk-implicit-5Ks0No4Bz9Ex7Dp3Mr1Y"
ANTHROPIC_KEY = "sk-ant-api03-6Lt1Op5Ca0Fy8Eq4Ns2Z"
# Keys of no recognisable shape: only exact-match masking can catch these.
GEMINI_KEY = "AIzaSyD7Mu2Pq6Db1Gz9Fr5Ot3Ha"
ROTATED_KEY = "rotated0Nv3Qr7Ec2Ha0Gs6Pu4Ib"
ECHO_KEY = "echoMe1Ow4Rs8Fd3Ib1Ht7Qv5Jc"
SLOW_KEY = "slowpoke2Px5St9Ge4Jc2Iu8Rw6K"
QUERY_KEY = "queryKey3Qy6Tu0Hf5Kd3Jv9Sx7L"
WRONG_TOKEN = "wrong-Guess-4Rz7Uv1Ig6Le4Kw0Ty8M"
SECRETS = (
    RELAY_TOKEN,
    ADMIN_TOKEN,
    DEFAULT_KEY,
    OPENAI_KEY,
    IMPLICIT_KEY,
    ANTHROPIC_KEY,
    GEMINI_KEY,
    ROTATED_KEY,
    ECHO_KEY,
    SLOW_KEY,
    QUERY_KEY,
    WRONG_TOKEN,
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "I like green tea."}]}


class Capture(logging.Handler):
    """Keeps every formatted line, as the gateway's real formatters write it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")


@pytest.fixture
def captured() -> Iterator[list[Capture]]:
    """Every logger at DEBUG into one JSON and one text capture, restored afterwards."""
    handlers = [
        Capture(JsonFormatter()),
        Capture(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")),
    ]
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield handlers
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)


def echoing_provider() -> web.Application:
    """A provider that repeats the credential it was given in every error, as some do."""

    async def chat(request: web.Request) -> web.Response:
        key = (
            request.headers.get("x-api-key")
            or request.headers.get("Authorization", "").removeprefix("Bearer ")
            or request.query.get("key", "")
        )
        await request.read()
        status = int(request.headers.get("X-Test-Status", "400"))
        if request.path.endswith("/messages"):
            body = {
                "type": "error",
                "error": {"type": "authentication_error", "message": f"invalid x-api-key {key}"},
            }
            return web.json_response(body, status=401)
        if status == 500:
            return web.Response(text=f"<html>bad key {key}</html>", status=500)
        error = {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", chat)
    return app


def stalling_provider() -> web.Application:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stall)
    return app


async def scenario(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    home: Path,
) -> tuple[list[bytes], Path]:
    """The session; returns every response body and header block, and the data dir."""
    seen: list[bytes] = []
    async with FakeOpenAI() as openai, FakeOpenAI() as default, FakeAnthropic() as anthropic:
        echo = await aiohttp_server(echoing_provider())
        slow = await aiohttp_server(stalling_provider())
        env_file = tmp_path / "powermem.env"
        env_file.write_text(
            f"LLM_PROVIDER=openai\nLLM_API_KEY={DEFAULT_KEY}\nLLM_MODEL=default-model\n"
            f"OPENAI_LLM_BASE_URL={default.url}\n"
        )
        settings = make_settings(
            env_file=env_file,
            relay_token=RELAY_TOKEN,
            admin_token=ADMIN_TOKEN,
            provider_timeout=0.3,
            provider_retries=1,
        )
        client: Client = await aiohttp_client(GatewayTestServer(create_app(settings)))

        async def call(method: str, path: str, **kwargs: Any) -> Any:
            response = await client.request(method, path, **kwargs)
            body = await response.read()
            seen.append(f"{response.status} {dict(response.headers)}".encode() + body)
            return response

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        relay = {"Authorization": f"Bearer {RELAY_TOKEN}"}

        async def register(provider: str, key: str, base_url: str, who: str = "") -> str:
            body = {
                "provider": provider,
                "model": f"{provider}-m",
                "api_key": key,
                "base_url": base_url,
                "client": who,
            }
            response = await call("POST", "/api/v1/instances", json=body)
            assert response.status == 201
            instance_id: str = response.headers["X-PowerMem-Instance"]
            return instance_id

        openai_id = await register("openai", OPENAI_KEY, openai.url, "cursor")
        anthropic_id = await register("anthropic", ANTHROPIC_KEY, anthropic.url, "claude-code")
        gemini_id = await register("gemini", GEMINI_KEY, openai.url)
        echo_id = await register("openai", ECHO_KEY, str(echo.make_url("/v1")), "codex")
        echo_anthropic_id = await register("anthropic", ECHO_KEY, str(echo.make_url("")))
        slow_id = await register("deepseek", SLOW_KEY, str(slow.make_url("/v1")))

        # Implicit registration by headers, a proxied body, a stream and an upstream error.
        implicit = {
            "X-PowerMem-LLM-Provider": "deepseek",
            "X-PowerMem-LLM-Model": "deepseek-chat",
            "X-PowerMem-LLM-Api-Key": IMPLICIT_KEY,
            "X-PowerMem-LLM-Base-Url": openai.url,
            "X-PowerMem-Client": "opencode",
        }
        await call("POST", "/api/v1/memories", json={"content": "hi"}, headers=implicit)
        await call("GET", "/sse?pause=0", headers=implicit)
        await call("GET", "/fail?status=500", headers=implicit)
        # A client that puts a key in a query string: the access logs print request lines.
        await call("GET", f"/fail?status=404&api_key={QUERY_KEY}&key={QUERY_KEY}")
        # A base URL carrying a key in its query is refused, without repeating it.
        await call(
            "POST",
            "/api/v1/instances",
            json={
                "provider": "gemini",
                "model": "g",
                "api_key": GEMINI_KEY,
                "base_url": f"https://generativelanguage.googleapis.com/v1beta?key={QUERY_KEY}",
            },
        )

        # Relay calls: plain and streamed, OpenAI-compatible and Anthropic, and the default LLM.
        for instance_id in (openai_id, anthropic_id, gemini_id, None):
            headers = dict(relay)
            if instance_id:
                headers["baggage"] = in_flight(client.server.app, instance_id)
            await call("POST", "/relay/v1/chat/completions", json=CHAT, headers=headers)
            await call(
                "POST", "/relay/v1/chat/completions", json=CHAT | {"stream": True}, headers=headers
            )
        # Providers repeating the key in 400, 500 (retried) and Anthropic 401 errors.
        for instance_id, status in ((echo_id, "400"), (echo_id, "500"), (echo_anthropic_id, "")):
            await call(
                "POST",
                "/relay/v1/chat/completions",
                json=CHAT,
                headers={
                    **relay,
                    "baggage": in_flight(client.server.app, instance_id),
                    "X-Test-Status": status,
                },
            )
        # A provider that never answers: 504 after the retries.
        await call(
            "POST",
            "/relay/v1/chat/completions",
            json=CHAT,
            headers={**relay, "baggage": in_flight(client.server.app, slow_id)},
        )

        # Refused: wrong relay token (a provider key by mistake), wrong admin tokens.
        await call(
            "POST",
            "/relay/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {OPENAI_KEY}"},
        )
        await call(
            "POST", "/relay/v1/chat/completions", json=CHAT, headers={"Authorization": WRONG_TOKEN}
        )
        await call("GET", "/api/v1/instances", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        await call(
            "GET",
            f"/api/v1/instances/{openai_id}",
            headers={"Authorization": f"Bearer {RELAY_TOKEN}"},
        )

        # Rotation, then what an operator looks at.
        await call(
            "PUT", f"/api/v1/instances/{gemini_id}", json={"api_key": ROTATED_KEY}, headers=admin
        )
        await call(
            "POST",
            "/relay/v1/chat/completions",
            json=CHAT,
            headers={**relay, "baggage": in_flight(client.server.app, gemini_id)},
        )
        await call("GET", "/api/v1/instances", headers=admin)
        for instance_id in (openai_id, anthropic_id, gemini_id, echo_id):
            await call("GET", f"/api/v1/instances/{instance_id}", headers=admin)
        await call("GET", "/gateway/status")
        await call("GET", "/metrics")

        # doctor --probe-providers, with the echoing instance registered as codex's (its id
        # file and its knob, as `register --client codex` leaves them).
        gateway = str(client.make_url("")).rstrip("/")
        saved = home / ".codex" / "powermem-instance.id"
        saved.parent.mkdir(parents=True)
        saved.write_text(echo_id + "\n")
        knob = f'[mcp_servers.powermem]\nurl = "{gateway}/i/{echo_id}/mcp"\n'
        (home / ".codex" / "config.toml").write_text(knob)
        argv = ["doctor", "--gateway", gateway, "--probe-providers"]
        env = {"POWERMEM_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
        result = await asyncio.to_thread(CliRunner().invoke, cli, argv, env=env)
        assert "codex provider" in result.output, result.output
        seen.append(result.output.encode())

        await client.close()

    # A gateway whose upstream is down: 502, for explicit and implicit requests.
    down = make_settings(upstream=f"http://127.0.0.1:{free_port()}", data_dir=tmp_path / "down")
    down_client: Client = await aiohttp_client(GatewayTestServer(create_app(down)))
    for headers in ({}, implicit):
        response = await down_client.get("/api/v1/memories", headers=headers)
        assert response.status == 502
        seen.append(await response.read())
    await down_client.close()
    return seen, settings.data_dir


async def test_no_secret_in_any_byte_at_debug_level(
    aiohttp_client: Any,
    aiohttp_server: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clean_env: Path,
    captured: list[Capture],
) -> None:
    """Logs of every level and logger, responses, doctor's report and data files hold no secret."""
    responses, data_dir = await scenario(
        aiohttp_client, aiohttp_server, make_settings, tmp_path, clean_env
    )
    logs = [handler.stream.getvalue() for handler in captured]
    assert "gateway.access" in logs[0] and "aiohttp.access" in logs[1]
    assert " 504 " in logs[1] and " 502 " in logs[1]
    files = {
        p: p.read_bytes()
        for root in (data_dir, tmp_path / "down")
        for p in root.rglob("*")
        if p.is_file()
    }
    places: dict[str, bytes] = {
        "json log": logs[0].encode(),
        "text log": logs[1].encode(),
        **{f"response #{n}": body for n, body in enumerate(responses)},
        **{str(path): content for path, content in files.items()},
    }
    for secret in SECRETS:
        for needle in (secret, secret[6:-6]):
            for where, blob in places.items():
                assert needle.encode() not in blob, f"{secret[:6]}… found in {where}"


def test_tracebacks_and_client_errors_are_masked(captured: list[Capture]) -> None:
    """A remembered secret of any shape, and a URL's credential query, vanish from tracebacks."""
    import aiohttp

    from gateway.observe.logs import remember_secret

    token = "plain0Token7With2No9Shape4At1All"
    remember_secret(token)
    log = logging.getLogger("gateway.test")
    try:
        raise aiohttp.InvalidURL(f"http://h/v1?key={QUERY_KEY}&token={token}")
    except aiohttp.ClientError:
        log.exception("call failed with %s", token)
    try:
        raise RuntimeError({"api_key": GEMINI_KEY, "x-api-key": ECHO_KEY})
    except RuntimeError:
        log.debug("provider answered", exc_info=True)
    for handler in captured:
        text = handler.stream.getvalue()
        assert "Traceback" in text and "InvalidURL" in text
        for secret in (token, QUERY_KEY, GEMINI_KEY, ECHO_KEY):
            assert secret not in text
