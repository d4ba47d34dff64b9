"""`/metrics` in Prometheus format, and one structured log line per request, never a key."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.http import metrics as metrics_http
from gateway.http.app import create_app
from gateway.observe.logs import JsonFormatter, TextFormatter, redact
from gateway.settings import Settings
from tests.binding import in_flight
from tests.conftest import OperatorFactory
from tests.fakes.providers import FakeAnthropic

Client = TestClient[web.Request, web.Application]
KEY = "sk-ant-metrics-0123456789abcdef"
RELAY_TOKEN = "pgr-metrics-relay-token-0123456789"


@pytest.fixture
def log_stream() -> Iterator[tuple[io.StringIO, Callable[[str], None]]]:
    """Capture the gateway's log output through its real formatters."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def use(fmt: str) -> None:
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(message)s"))

    use("json")
    yield stream, use
    root.removeHandler(handler)
    root.setLevel(old_level)


async def _metrics(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_requests_by_route_class_and_status(gateway: Client) -> None:
    """Proxy, API and error answers are counted under small, fixed labels."""
    assert (await gateway.get("/api/v1/memories")).status == 200
    assert (
        await gateway.get("/api/v1/memories", headers={"X-PowerMem-Instance": "nope!"})
    ).status == 400
    assert (await gateway.get("/api/v1/instances")).status == 200
    samples = await _metrics(gateway)
    assert (
        samples[("powermem_gateway_requests_total", (("route", "proxy"), ("status", "200")))] == 1
    )
    assert (
        samples[("powermem_gateway_requests_total", (("route", "proxy"), ("status", "400")))] == 1
    )
    assert (
        samples[("powermem_gateway_requests_total", (("route", "instances"), ("status", "200")))]
        == 1
    )
    assert samples[("powermem_gateway_request_duration_seconds_count", (("route", "proxy"),))] == 2


async def test_metrics_are_gzipped_only_for_a_scraper_that_accepts_gzip(
    operator: OperatorFactory,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus says `Accept-Encoding: gzip`; a scraper that does not (or refuses gzip with
    q=0) gets the text. Both are the same rendering, and no `_created` series doubles it."""
    monkeypatch.setattr(metrics_http, "SCRAPES_PER_SECOND", 100)  # six scrapes at once here
    gateway = await operator(create_app(make_settings()))
    assert (await gateway.get("/api/v1/memories")).status == 200
    bodies, codings = {}, {}
    for accept in ("gzip", "deflate, gzip;q=0.5", "identity", "gzip;q=0", "*", ""):
        response = await gateway.get(
            "/metrics", headers={"Accept-Encoding": accept}, auto_decompress=False
        )
        assert response.status == 200
        assert response.headers["Vary"] == "Accept-Encoding"
        raw = await response.read()
        codings[accept] = response.headers.get("Content-Encoding", "")
        bodies[accept] = gzip.decompress(raw) if codings[accept] == "gzip" else raw
    assert codings == {
        "gzip": "gzip",
        "deflate, gzip;q=0.5": "gzip",
        "identity": "",
        "gzip;q=0": "",
        "*": "",
        "": "",
    }
    assert len(set(bodies.values())) == 1  # one rendering per RENDER_TTL, whatever the coding
    text = bodies["gzip"].decode()
    assert "powermem_gateway_requests_total" in text
    assert "_created" not in text


async def test_relay_metrics_are_labelled_by_instance_and_client_never_by_key(
    operator: OperatorFactory, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Calls, errors and tokens per instance id and client label; the key is nowhere."""
    async with FakeAnthropic() as fake:
        client: Client = await operator(
            create_app(make_settings(relay_token=RELAY_TOKEN, env_file=tmp_path / "none.env"))
        )
        registered = await client.post(
            "/api/v1/instances",
            json={
                "client": "claude-code",
                "provider": "anthropic",
                "model": "claude",
                "api_key": KEY,
                "base_url": fake.url,
            },
        )
        instance_id = (await registered.json())["data"]["instance_id"]
        headers = {
            "Authorization": f"Bearer {RELAY_TOKEN}",
            "baggage": in_flight(client.server.app, instance_id),
        }
        chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        assert (
            await client.post("/relay/v1/chat/completions", json=chat, headers=headers)
        ).status == 200
        fake.fail(400, times=1)
        assert (
            await client.post("/relay/v1/chat/completions", json=chat, headers=headers)
        ).status == 400
        text = await (await client.get("/metrics")).text()
        samples = await _metrics(client)
    labels = (("client", "claude-code"), ("instance_id", instance_id))
    assert samples[("powermem_gateway_relay_calls_total", labels)] == 2
    assert samples[("powermem_gateway_relay_errors_total", labels)] == 1
    assert (
        samples[
            (
                "powermem_gateway_relay_tokens_total",
                (*labels[:1], ("instance_id", instance_id), ("kind", "prompt")),
            )
        ]
        == 10
    )
    assert (
        samples[
            ("powermem_gateway_relay_provider_duration_seconds_count", (("provider", "anthropic"),))
        ]
        == 2
    )
    assert ("powermem_gateway_upstream_restarts", ()) in samples
    assert KEY not in text and RELAY_TOKEN not in text


async def test_one_json_log_line_per_request_with_instance_status_and_duration(
    gateway: Client, log_stream: tuple[io.StringIO, Callable[[str], None]]
) -> None:
    """Each request logs method, path (no query), status, duration and instance; no key."""
    stream, _ = log_stream
    headers = {
        "X-PowerMem-LLM-Provider": "anthropic",
        "X-PowerMem-LLM-Model": "claude",
        "X-PowerMem-LLM-Api-Key": KEY,
        "X-PowerMem-Client": "codex",
    }
    response = await gateway.get("/api/v1/memories?user_id=u&secret=q", headers=headers)
    instance_id = response.headers["X-PowerMem-Instance"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert len(access) == 1
    (entry,) = access
    assert entry["method"] == "GET"
    assert entry["path"] == "/api/v1/memories"
    assert entry["status"] == 200
    assert entry["instance_id"] == instance_id
    assert entry["client"] == "codex"
    assert entry["route"] == "proxy"
    assert isinstance(entry["duration_ms"], float)
    assert KEY not in stream.getvalue()
    # aiohttp's own access log belongs to the test servers; `serve` turns it off.
    ours = [line for line in lines if line["logger"].startswith("gateway")]
    assert "secret=q" not in json.dumps(ours)


async def test_text_log_format_is_one_readable_line(
    gateway: Client, log_stream: tuple[io.StringIO, Callable[[str], None]]
) -> None:
    """--log-format text gives `METHOD path status key=value…` lines."""
    stream, use = log_stream
    use("text")
    await gateway.get("/api/v1/memories")
    (line,) = [ln for ln in stream.getvalue().splitlines() if ln.startswith("GET ")]
    assert line.startswith("GET /api/v1/memories 200")
    assert "status=200" in line and "duration_ms=" in line


def test_redaction_masks_keys_and_bearer_tokens_that_reach_a_log_line() -> None:
    """A library that logs what it was given still never prints a whole key or token."""
    line = redact(f"calling with {KEY} and Authorization: Bearer {RELAY_TOKEN}")
    assert KEY not in line and RELAY_TOKEN not in line
    assert "sk-ant…[redacted]" in line and "Bearer [redacted]" in line
