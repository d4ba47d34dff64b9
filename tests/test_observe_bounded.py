"""What the gateway tells its operator stays bounded under abuse and cheap per request.

The audit log rotates by size and says what it dropped; access lines are built without the
logging machinery but read exactly like the formatters' lines; metrics keep a bounded number
of series and render off the event loop; known secrets are added in O(1) and still masked.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import multiprocessing
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe import access
from gateway.observe.audit import AUDIT_FILE, AuditLog
from gateway.observe.known import KnownSecrets
from gateway.observe.logs import JsonFormatter, TextFormatter, access_log
from gateway.observe.metrics import MAX_INSTANCES, OVERFLOW, Metrics
from gateway.observe.redaction import redact, remember_secret

Client = TestClient[web.Request, web.Application]


# -- the audit log ----------------------------------------------------------------------------


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_audit_log_rotates_by_size_and_loses_nothing_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Past its size the file moves to .1…; when the oldest goes, the count of it is written."""
    audit = AuditLog(tmp_path, max_bytes=2000, keep=2)
    written = 0
    for n in range(120):
        audit.record("admin_auth_failed", source=f"192.0.2.{n % 250}")
        written += 1
    audit.close()
    files = [tmp_path / AUDIT_FILE, tmp_path / f"{AUDIT_FILE}.1", tmp_path / f"{AUDIT_FILE}.2"]
    assert all(p.exists() for p in files) and not (tmp_path / f"{AUDIT_FILE}.3").exists()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert all(p.stat().st_size < 2000 + 200 for p in files)
    kept = [e for p in files for e in entries(p)]
    rotations = [e for e in kept if e["action"] == "audit_rotated"]
    assert rotations and rotations[-1]["previous"] == f"{AUDIT_FILE}.1"
    assert rotations[-1]["dropped_entries"] > 0
    # Every line ever written (entries and rotation notes) is kept, or counted as dropped in
    # a warning of the gateway's log: nothing went without a word.
    warned = [r.args[0] for r in caplog.records if "entries were removed" in r.getMessage()]
    notes = sum(1 for r in caplog.records if "entries were removed" in r.getMessage())
    total_rotations = len(warned) + 2  # the first two rotations dropped nothing
    assert len(kept) + sum(warned) == written + total_rotations
    assert notes > 0


def test_audit_files_left_readable_are_made_private_at_start(tmp_path: Path) -> None:
    """A careless `chmod 644` on audit.log or a rotated file is undone when the log opens."""
    for name in (AUDIT_FILE, f"{AUDIT_FILE}.1"):
        (tmp_path / name).write_text('{"action":"create"}\n')
        (tmp_path / name).chmod(0o644)
    AuditLog(tmp_path).close()
    for name in (AUDIT_FILE, f"{AUDIT_FILE}.1"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def _write_entries(folder: str, count: int) -> None:
    audit = AuditLog(Path(folder), max_bytes=3000, keep=50)
    for _ in range(count):
        audit.record("create", instance_id="pmem-0000000000000000", source="cli")
    audit.close()


def test_processes_rotating_one_audit_log_keep_every_entry(tmp_path: Path) -> None:
    """Three processes appending and rotating at once: every entry lands in some file, whole."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_entries, args=(str(tmp_path), 150)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    kept = [e for p in tmp_path.glob(f"{AUDIT_FILE}*") if not p.name.endswith(".lock")
            for e in entries(p)]  # fmt: skip
    assert sum(e["action"] == "create" for e in kept) == 450
    assert sum(e.get("dropped_entries", 0) for e in kept) == 0


# -- access lines -----------------------------------------------------------------------------


ARGS = ("GET", "/i/pmem-0123456789abcdef~pmis-not-for-logs/api/v1/memories", 200, 1.25,
        "pmem-0123456789abcdef", "codex", "127.0.0.1", "proxy")  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_direct_access_lines_read_exactly_like_the_formatters_lines(fmt: str) -> None:
    """The fast path writes byte for byte what the logging formatters would, path redacted."""
    stream, via_logging = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(via_logging)
    formatter = (
        JsonFormatter()
        if fmt == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    access_log.addHandler(handler)
    old_level = access_log.level
    access_log.setLevel(logging.INFO)
    try:
        access.write(*ARGS)
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(old_level)
    access.configure(access.AccessWriter(stream, "json" if fmt == "json" else "text"))
    try:
        access.write(*ARGS)
    finally:
        access.configure(None)
    direct, logged = stream.getvalue().strip(), via_logging.getvalue().strip()
    assert "pmis-not-for-logs" not in direct and "~[redacted]" in direct
    # Equal but for the timestamp, which differs by the time between the two writes.
    cut = direct.index(" INFO ") if fmt == "text" else direct.index('"level"')
    assert len(direct[:cut]) == len(logged[:cut])  # the same timestamp format
    assert direct[cut:] == logged[cut:]
    if fmt == "json":
        assert json.loads(direct)["status"] == 200


async def test_access_lines_are_written_in_batches() -> None:
    """Within a loop, lines wait until a batch is full or a few milliseconds have passed."""

    class Counting(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Counting.writes += 1
            return super().write(text)

    stream = Counting()
    access.configure(access.AccessWriter(stream, "json", max_batch=10, max_delay=0.02))
    try:
        for _ in range(25):
            access.write(*ARGS)
        assert Counting.writes == 2 and stream.getvalue().count("\n") == 20
        await asyncio.sleep(0.05)
        assert Counting.writes == 3 and stream.getvalue().count("\n") == 25
    finally:
        access.configure(None)


def test_a_level_above_info_writes_no_access_line() -> None:
    """`--log-level warning` switches access lines off on the fast path too."""
    access.configure(access.DISABLED)
    try:
        access.write(*ARGS)  # nowhere to go, nothing raised
    finally:
        access.configure(None)


# -- metrics ----------------------------------------------------------------------------------


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_a_flood_of_instances_keeps_metrics_bounded_with_an_overflow_label() -> None:
    """Past MAX_INSTANCES, calls count under instance_id=other: the series count stops."""
    metrics = Metrics()
    for n in range(MAX_INSTANCES + 500):
        metrics.relay_call(
            instance_id=f"pmem-{n:016x}", client="c", provider="openai", seconds=0.01, error=False
        )
        metrics.llm_error(f"pmem-{n:016x}", "c")
    assert metrics.instance_series == MAX_INSTANCES + 1
    found = samples(metrics)
    overflow = (("client", OVERFLOW), ("instance_id", OVERFLOW))
    assert found[("powermem_gateway_relay_calls_total", overflow)] == 500
    assert found[("powermem_gateway_llm_errors_total", overflow)] == 500


def test_odd_statuses_and_routes_fold_into_fixed_labels() -> None:
    """Whatever status or route class a caller causes, the label sets stay the fixed few."""
    metrics = Metrics()
    for status in range(100, 600):
        metrics.observe_request("proxy", status, 0.001)
    metrics.observe_request("no-such-route", 200, 0.001)
    statuses = {
        dict(labels)["status"]
        for name, labels in samples(metrics)
        if name == "powermem_gateway_requests_total"
    }
    assert len(statuses) <= 27 and OVERFLOW in statuses


async def test_a_flood_of_scrapes_renders_once(
    operator: Any, make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many concurrent /metrics calls share one rendering, done off the event loop."""
    import threading

    from gateway.http import metrics as metrics_http
    from gateway.http.app import create_app
    from gateway.observe import metrics as metrics_module

    monkeypatch.setattr(metrics_http, "SCRAPES_PER_SECOND", 100)  # this test is not about it
    rendered: list[str] = []
    real = metrics_module.generate_latest

    def counting(registry: Any) -> bytes:
        rendered.append(threading.current_thread().name)
        return real(registry)

    monkeypatch.setattr(metrics_module, "generate_latest", counting)
    client = await operator(create_app(make_settings()))
    answers = await asyncio.gather(*(client.get("/metrics") for _ in range(30)))
    assert {a.status for a in answers} == {200}
    assert len(rendered) == 1
    assert rendered[0] != threading.main_thread().name


async def test_scrapes_past_five_a_second_from_one_address_are_refused(
    operator: Any, make_settings: Callable[..., Any]
) -> None:
    """Even with the admin token: the text changes once a second, so a flood of scrapes gets
    429 (with Retry-After, in the envelope) after its first five, and renders nothing more."""
    from gateway.http.app import create_app
    from gateway.http.metrics import SCRAPES_PER_SECOND

    client = await operator(create_app(make_settings()))
    answers = [await client.get("/metrics") for _ in range(SCRAPES_PER_SECOND + 2)]
    statuses = [a.status for a in answers]
    # A bucket refills continuously: a slow machine may earn one more scrape on the way.
    assert statuses[:SCRAPES_PER_SECOND] == [200] * SCRAPES_PER_SECOND
    assert statuses[-1] == 429
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "1"
    body = await refused.json()
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    await asyncio.sleep(1.0 / SCRAPES_PER_SECOND + 0.05)
    assert (await client.get("/metrics")).status == 200


# -- known secrets ----------------------------------------------------------------------------


def test_known_secrets_mask_every_one_of_thousands_and_stay_bounded() -> None:
    """Each of 5 000 secrets is masked in a line; only the newest LIMIT are kept."""
    known = KnownSecrets(lambda s: "[redacted]")
    values = [f"tok{n:06d}-{'x' * (n % 7)}-tail" for n in range(5000)]
    for value in values:
        known.add(value)
    assert len(known) == KnownSecrets.LIMIT
    for value in values[-50:]:
        line = f"prefix {value} middle {value}, end"
        assert value not in known.replace(line) and known.replace(line).count("[redacted]") == 2
    assert values[0] in known.replace(f"old {values[0]} one")


def test_known_secrets_mask_the_longest_at_the_leftmost_place() -> None:
    """A secret that contains another is masked whole, overlaps never leave a piece."""
    known = KnownSecrets(lambda s: f"<{len(s)}>")
    known.add("abcdefgh")
    known.add("abcdefghijkl")
    assert known.replace("xxabcdefghijklyy abcdefgh") == "xx<12>yy <8>"
    assert known.replace("short") == "short"


def test_a_remembered_secret_of_any_shape_is_masked_everywhere_a_line_goes() -> None:
    """The redact() every formatter uses finds a remembered value inside any text."""
    remember_secret("no shape at all 0123 but long")
    assert "no shape at all" not in redact("call with 'no shape at all 0123 but long' failed")


@given(
    secrets_=st.lists(st.text(alphabet="abc-", min_size=8, max_size=14), min_size=1, max_size=6),
    pieces=st.lists(st.text(alphabet="abc- x", max_size=12), max_size=8),
    data=st.data(),
)
def test_no_known_secret_survives_a_scan_whatever_the_overlaps(
    secrets_: list[str], pieces: list[str], data: st.DataObject
) -> None:
    """Secrets of a tiny alphabet, overlapping each other and the text: none is left whole."""
    known = KnownSecrets(lambda s: "#")
    for secret in secrets_:
        known.add(secret)
    parts = [*pieces, *data.draw(st.lists(st.sampled_from(secrets_), min_size=1, max_size=5))]
    text = "".join(data.draw(st.permutations(parts)))
    masked = known.replace(text)
    for secret in secrets_:
        assert secret not in masked, (secret, text, masked)


def test_the_hot_path_binds_no_label_once_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first request of a kind, observing it again never calls `labels()`."""
    metrics = Metrics()
    metrics.observe_request("proxy", 200, 0.001)
    metrics.relay_call(instance_id="pmem-1", client="c", provider="openai", seconds=0.1, error=True)

    def forbidden(*args: Any) -> Any:
        raise AssertionError("labels() on the hot path")

    for family in (metrics.requests, metrics.latency, metrics.relay_latency):
        monkeypatch.setattr(family, "labels", forbidden)
    for _ in range(3):
        metrics.observe_request("proxy", 200, 0.001)
        metrics.relay_call(
            instance_id="pmem-1", client="c", provider="openai", seconds=0.1, error=True,
            tokens=(5, 1),
        )  # fmt: skip
    found = samples(metrics)
    assert (
        found[("powermem_gateway_relay_calls_total", (("client", "c"), ("instance_id", "pmem-1")))]
        == 4
    )


async def test_a_flood_of_status_calls_asks_powermem_once(gateway: Any, recorder: Any) -> None:
    """Status is cheap: 40 concurrent calls share one health request to powermem."""
    answers = await asyncio.gather(*(gateway.get("/gateway/status") for _ in range(40)))
    assert {a.status for a in answers} == {200}
    health = [r for r in recorder.requests if r.path_qs.endswith("/system/health")]
    assert len(health) == 1


@given(st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_per_instance_series_read_exactly_as_prometheus_client_writes_them(
    clients: list[str],
) -> None:
    """Client labels are whatever a tool sends (quotes, backslashes, line breaks, any
    script): each line is the one prometheus_client writes for the same counts, so no label
    can break the exposition or forge a series."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    ours = Metrics()
    registry = CollectorRegistry()
    labels = ["instance_id", "client"]
    calls = Counter("powermem_gateway_relay_calls", "Relayed LLM calls per instance.", labels,
                    registry=registry)  # fmt: skip
    errors = Counter("powermem_gateway_relay_errors", "Failed relayed LLM calls per instance.",
                     labels, registry=registry)  # fmt: skip
    tokens = Counter(
        "powermem_gateway_relay_tokens",
        "Tokens used by relayed LLM calls per instance (kind: prompt or completion).",
        [*labels, "kind"],
        registry=registry,
    )
    llm = Counter("powermem_gateway_llm_errors",
                  "LLM calls that failed at the provider, per instance.", labels,
                  registry=registry)  # fmt: skip
    for n, client in enumerate(clients):
        instance = f"pmem-{n:016x}"
        ours.relay_call(instance_id=instance, client=client, provider="openai", seconds=0.1,
                        error=n % 2 == 0, tokens=(n, 2 * n))  # fmt: skip
        ours.llm_error(instance, client)
        calls.labels(instance, client).inc()
        errors.labels(instance, client).inc(1 if n % 2 == 0 else 0)
        tokens.labels(instance, client, "prompt").inc(n)
        tokens.labels(instance, client, "completion").inc(2 * n)
        llm.labels(instance, client).inc()
    expected = set(generate_latest(registry).decode().splitlines())
    assert expected <= set(ours.text().decode().splitlines())
