"""Closed by default: the admin token, where it comes from, what it opens, and guessing it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.files import NotOurs
from gateway.http.app import create_app
from gateway.http.appkeys import ADMIN, REGISTRY, SETTINGS
from gateway.observe.audit import AUDIT_FILE
from gateway.policy.backoff import Backoff, address_key
from gateway.settings import Settings
from gateway.tokens import (
    ADMIN_TOKEN_FILE,
    RELAY_TOKEN_FILE,
    TokenError,
    load_admin_token,
    load_relay_token,
    read_admin_token,
)
from tests.fakes.upstream import Recorder

Client = TestClient[web.Request, web.Application]
KEY = "sk-closed-0123456789abcdef"
BODY = {"client": "cursor", "provider": "openai", "model": "gpt-4o", "api_key": KEY}
ADMIN_CALLS = [
    ("GET", "/api/v1/instances"),
    ("GET", "/api/v1/instances/{id}"),
    ("PUT", "/api/v1/instances/{id}"),
    ("DELETE", "/api/v1/instances/{id}"),
    ("GET", "/metrics"),
    ("POST", "/gateway/probe"),
]


@pytest.fixture
async def closed(aiohttp_client: Any, make_settings: Callable[..., Settings]) -> Client:
    """A gateway started the default way: no admin token configured anywhere."""
    client: Client = await aiohttp_client(create_app(make_settings(admin_token=None)))
    return client


def token_of(client: Client) -> str:
    return client.server.app[ADMIN].token


async def register(client: Client) -> str:
    response = await client.post("/api/v1/instances", json=BODY)
    assert response.status == 201, await response.text()
    instance_id: str = (await response.json())["data"]["instance_id"]
    return instance_id


# -- the token itself -------------------------------------------------------------------------


async def test_without_a_configured_token_one_is_made_private_in_the_data_dir(
    closed: Client, make_settings: Callable[..., Settings]
) -> None:
    """First start writes admin.token (0600, 256 bits); the CLI reads that same token."""
    path = make_settings().data_dir / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token_of(closed)
    assert len(token_of(closed)) >= 40
    assert read_admin_token(make_settings(admin_token=None)) == token_of(closed)


def test_the_generated_token_survives_a_restart(make_settings: Callable[..., Settings]) -> None:
    """A second start (or a second worker) finds the token the first one made."""
    settings = make_settings(admin_token=None)
    assert load_admin_token(settings) == load_admin_token(settings)


@pytest.mark.parametrize("name", [ADMIN_TOKEN_FILE, RELAY_TOKEN_FILE])
def test_a_token_file_left_readable_by_others_is_made_private_at_start(
    make_settings: Callable[..., Settings], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A careless `chmod 644` on a token file is undone at start, with a warning."""
    settings = make_settings(admin_token=None, relay_token=None)
    settings.data_dir.mkdir(parents=True)
    path = settings.data_dir / name
    path.write_text("pgx-an-existing-token-0123456789\n")
    path.chmod(0o644)
    token = load_admin_token(settings) if name == ADMIN_TOKEN_FILE else load_relay_token(settings)
    assert token == "pgx-an-existing-token-0123456789"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "0600" in caplog.text


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_token_file_owned_by_another_user_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    """A token someone else owns may have been planted: refused, with the way out."""
    settings = make_settings(admin_token=None)
    settings.data_dir.mkdir(parents=True)
    path = settings.data_dir / ADMIN_TOKEN_FILE
    path.write_text("pga-planted-token-0123456789\n")
    os.chown(path, 12345, 12345)
    with pytest.raises(NotOurs, match="belongs to user id 12345"):
        load_admin_token(settings)


def test_a_token_file_variable_is_read_as_it_is(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """`…_ADMIN_TOKEN_FILE` (a container secret) is read, its mode left to the operator."""
    secret = tmp_path / "admin_secret"
    secret.write_text("from-a-container-secret-0123\n")
    secret.chmod(0o444)
    settings = Settings.from_env({"POWERMEM_GATEWAY_ADMIN_TOKEN_FILE": str(secret)})
    assert load_admin_token(settings) == "from-a-container-secret-0123"
    assert load_admin_token(make_settings(admin_token=None, admin_token_file=secret)) == (
        "from-a-container-secret-0123"
    )
    assert stat.S_IMODE(secret.stat().st_mode) == 0o444
    with pytest.raises(TokenError, match="cannot read"):
        load_admin_token(make_settings(admin_token=None, admin_token_file=tmp_path / "none"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenError, match="empty"):
        load_relay_token(make_settings(relay_token=None, relay_token_file=tmp_path / "empty"))


# -- what the token opens ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_admin_calls_are_closed_without_the_token(
    closed: Client, recorder: Recorder, method: str, path: str
) -> None:
    """With nothing configured, every admin call is a 401 and changes nothing."""
    instance_id = await register(closed)
    response = await closed.request(
        method,
        path.format(id=instance_id),
        json={"model": "changed"},
    )
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "UNAUTHORIZED"
    assert (await closed.server.app[REGISTRY].get(instance_id)).model == "gpt-4o"
    assert recorder.requests == []


async def test_metrics_publish_no_instance_id_without_the_token(closed: Client) -> None:
    """Instance ids are what binds a request: /metrics shows none of them to a stranger."""
    instance_id = await register(closed)
    await closed.get("/api/v1/memories", headers={"X-PowerMem-Instance": instance_id})
    response = await closed.get("/metrics")
    assert response.status == 401
    assert instance_id not in await response.text()
    opened = await closed.get("/metrics", headers={"Authorization": f"Bearer {token_of(closed)}"})
    assert opened.status == 200


async def test_status_shows_a_stranger_health_only(closed: Client) -> None:
    """No upstream address (a way around the gateway), no counts, no relay activity."""
    await register(closed)
    response = await closed.get("/gateway/status")
    data = (await response.json())["data"]
    assert response.status == 200
    assert set(data) == {"version", "healthy"} and data["healthy"] is True
    text = await response.text()
    upstream_port = str(closed.server.app[SETTINGS].upstream).rsplit(":", 1)[1]
    assert upstream_port not in text
    admin = await closed.get(
        "/gateway/status", headers={"Authorization": f"Bearer {token_of(closed)}"}
    )
    full = (await admin.json())["data"]
    assert full["instances"] == 1 and full["upstream"]["healthy"] is True
    assert "url" in full["upstream"] and "relay" in full


async def test_a_wrong_token_on_status_is_a_401_not_the_public_view(closed: Client) -> None:
    """Presenting a token and getting it wrong is a failed authentication, wherever it is."""
    response = await closed.get("/gateway/status", headers={"Authorization": "Bearer nope"})
    assert response.status == 401


async def test_registration_stays_open_and_a_wrong_token_there_is_refused(
    closed: Client,
) -> None:
    """Clients register without a token; one that sends a wrong admin token is refused."""
    wrong = await closed.post(
        "/api/v1/instances", json=BODY, headers={"Authorization": "Bearer guess"}
    )
    assert wrong.status == 401
    assert await closed.server.app[REGISTRY].total() == 0
    right = await closed.post(
        "/api/v1/instances", json=BODY, headers={"Authorization": f"Bearer {token_of(closed)}"}
    )
    assert right.status == 201
    assert (await closed.post("/api/v1/instances", json=BODY)).status == 200


# -- browsers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_body_a_browser_could_send_across_origins_is_refused(
    closed: Client, recorder: Recorder, content_type: str | None
) -> None:
    """A JSON body not declared application/json is a 415: a web page cannot register."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await closed.post(
        "/api/v1/instances", data=json.dumps(BODY).encode(), headers=headers
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert await closed.server.app[REGISTRY].total() == 0
    assert recorder.requests == []


async def test_json_with_a_charset_is_json(closed: Client) -> None:
    """`application/json; charset=utf-8` is what many clients send: accepted."""
    response = await closed.post(
        "/api/v1/instances",
        data=json.dumps(BODY).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 201


# -- guessing -----------------------------------------------------------------------------------


async def test_guessing_the_token_backs_off_and_is_audited_only_while_looked_at(
    closed: Client, make_settings: Callable[..., Settings]
) -> None:
    """After a few wrong tokens an address gets 429 + Retry-After, even with the right one."""
    statuses = []
    for n in range(12):
        response = await closed.get(
            "/api/v1/instances", headers={"Authorization": f"Bearer guess-{n}"}
        )
        statuses.append(response.status)
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 401  # the sixth is looked at, and starts the wait
    assert set(statuses[6:]) == {429}
    blocked = await closed.get(
        "/api/v1/instances", headers={"Authorization": f"Bearer {token_of(closed)}"}
    )
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) >= 1
    assert (await blocked.json())["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    lines = (make_settings().data_dir / AUDIT_FILE).read_text().splitlines()
    failures = [json.loads(line) for line in lines if "admin_auth_failed" in line]
    assert len(failures) == 6


def test_backoff_doubles_up_to_its_cap_and_a_success_clears_it() -> None:
    """Free tries, then 1 s, 2 s, 4 s … capped; the right token resets the address."""
    now = [1000.0]
    backoff = Backoff(free=2, first_delay=1.0, max_delay=8.0, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        backoff.failed("192.0.2.1")
        waits.append(backoff.wait("192.0.2.1"))
    assert waits == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.wait("192.0.2.2") == 0.0
    backoff.succeeded("192.0.2.1")
    assert backoff.wait("192.0.2.1") == 0.0


def test_backoff_forgets_an_address_that_stopped_failing() -> None:
    """A quarter of an hour without a failure and the address starts afresh."""
    now = [0.0]
    backoff = Backoff(free=0, forget_after=900.0, clock=lambda: now[0])
    backoff.failed("192.0.2.1")
    now[0] = 901.0
    assert backoff.wait("192.0.2.1") == 0.0 and len(backoff) == 0


def test_backoff_table_is_bounded_and_ipv6_counts_per_slash_64() -> None:
    """A flood of addresses keeps the newest within the bound; one /64 is one address."""
    backoff = Backoff(max_addresses=100, free=0)
    for n in range(5000):
        backoff.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(backoff) == 100
    assert backoff.wait("10.0.19.135") > 0  # among the last 100
    assert backoff.wait("10.0.0.1") == 0.0  # forgotten first
    ipv6 = Backoff(free=1)
    ipv6.failed("2001:db8::1")
    ipv6.failed("2001:db8::ffff:2")
    assert ipv6.wait("2001:db8::3") > 0
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:0:1::5") == "2001:db8:0:1::/64"
