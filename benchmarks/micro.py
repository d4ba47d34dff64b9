"""Per-request costs of the aiohttp side's plumbing, before and after issue 12/14's changes.

    python -m benchmarks.micro [--repeat 5] [--number 20000]

In-process micro-benchmarks (no wrk, no nginx): each case times the previous way (kept here,
a few lines each, so the comparison stays runnable) against the way the gateway does it now,
in µs of CPU per call, min/median/max over `--repeat` runs. Printed as a table and written to
benchmarks/results/micro-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import re
import secrets
import statistics
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.instances.model import InstanceConfig
from gateway.observe import access
from gateway.observe.known import KnownSecrets
from gateway.observe.logs import JsonFormatter
from gateway.observe.metrics import Metrics
from gateway.relay.body import parse_chat_request

RESULTS = Path(__file__).with_name("results")
Case = tuple[str, Callable[[], object], Callable[[], object]]


def _timed(fn: Callable[[], object], number: int, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        runs.append((time.process_time() - start) / number * 1e6)
    return runs


# -- access lines ---------------------------------------------------------------------------


def _access_cases() -> list[Case]:
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    extra = {
        "method": "GET",
        "path": "/api/v1/memories",
        "status": 200,
        "duration_ms": 1.23,
        "instance_id": "pmem-0123456789abcdef",
        "client": "codex",
        "remote": "127.0.0.1",
        "route": "proxy",
    }

    def before() -> None:
        handler.stream.seek(0)
        logger.info("%s %s %d", "GET", "/api/v1/memories", 200, extra=extra)

    writer = access.AccessWriter(io.StringIO(), "json")

    def after() -> None:
        writer.stream.seek(0)
        access.write(
            "GET", "/api/v1/memories", 200, 1.23, "pmem-0123456789abcdef", "codex",
            "127.0.0.1", "proxy",
        )  # fmt: skip

    access.configure(writer)
    return [("access line (JSON, batched)", before, after)]


# -- metrics --------------------------------------------------------------------------------


def _metrics_cases() -> list[Case]:
    metrics = Metrics()

    def before_request() -> None:
        metrics.requests.labels("proxy", "200").inc()
        metrics.latency.labels("proxy").observe(0.0012)

    def after_request() -> None:
        metrics.observe_request("proxy", 200, 0.0012)

    def before_relay() -> None:
        labels = ("pmem-0123456789abcdef", "codex")
        metrics.relay_latency.labels("openai").observe(0.2)
        metrics.relay_calls.labels(*labels).inc()
        metrics.relay_tokens.labels(*labels, "prompt").inc(100)
        metrics.relay_tokens.labels(*labels, "completion").inc(20)

    def after_relay() -> None:
        metrics.relay_call(
            instance_id="pmem-0123456789abcdef", client="codex", provider="openai",
            seconds=0.2, error=False, tokens=(100, 20),
        )  # fmt: skip

    return [
        ("metrics per request", before_request, after_request),
        ("metrics per relay call", before_relay, after_relay),
    ]


# -- known secrets --------------------------------------------------------------------------


def _secret_cases(known_count: int) -> list[Case]:
    # Real keys share their beginnings (sk-proj-…, sk-ant-api03-…): the index must not care.
    keys = [f"sk-proj-{secrets.token_urlsafe(36)}" for _ in range(known_count)]
    fresh = iter([f"sk-{secrets.token_urlsafe(36)}" for _ in range(1_000_000)])
    values: list[str] = list(keys)
    pattern = [re.compile("|".join(map(re.escape, sorted(values, key=len, reverse=True))))]

    def before_add() -> None:
        values.append(next(fresh))
        pattern[0] = re.compile("|".join(map(re.escape, sorted(values, key=len, reverse=True))))
        values.pop()

    known = KnownSecrets(lambda s: "[redacted]")
    for key in keys:
        known.add(key)

    def after_add() -> None:
        known.add(next(fresh))

    line = (
        'provider https://api.example.com/v1 answered 401 {"error": {"message": "Incorrect '
        'API key sk-proj-abcd… provided for org org-abc"}} after 1.2 s; retrying once more'
    ) * 2
    hit = line + " " + keys[known_count // 2]

    def before_scan() -> None:
        pattern[0].sub("[redacted]", line)

    def after_scan() -> None:
        known.replace(line)

    def before_hit() -> None:
        pattern[0].sub("[redacted]", hit)

    def after_hit() -> None:
        known.replace(hit)

    return [
        (f"add a known secret ({known_count} known)", before_add, after_add),
        (f"scan a 300-char log line ({known_count} known)", before_scan, after_scan),
        (f"scan a line holding one ({known_count} known)", before_hit, after_hit),
    ]


# -- request bodies -------------------------------------------------------------------------


def _body_cases() -> list[Case]:
    chat = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You extract facts about the user. " * 30},
            {"role": "user", "content": "Input: what the user said about their work. " * 30},
        ],
        "temperature": 0.1,
        "response_format": {"type": "json_object"},
    }
    raw = json.dumps(chat).encode()

    def before_chat() -> dict[str, Any]:
        body: dict[str, Any] = json.loads(raw)
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise ValueError
        for message in body["messages"]:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ValueError
        if body.get("stream") is not None and not isinstance(body["stream"], bool):
            raise ValueError
        return body

    def after_chat() -> dict[str, Any]:
        return parse_chat_request(raw)

    registration = json.dumps(
        {
            "client": "cursor",
            "provider": "openai",
            "model": "gpt-4o",
            "api_key": "sk-" + "a" * 40,
            "base_url": "https://api.example.com/v1",
        }
    )

    def before_registration() -> object:
        fields = json.loads(registration)
        return InstanceConfig.parse(**fields)

    def after_registration() -> object:
        return InstanceConfig.validate_body(registration)

    return [
        (f"relay body, parse + check ({len(raw)} B)", before_chat, after_chat),
        ("registration body, parse + check", before_registration, after_registration),
    ]


async def _all(number: int, repeat: int) -> list[dict[str, Any]]:
    # Inside a running loop, as in the gateway: the access writer batches here.
    cases = [
        *_access_cases(),
        *_metrics_cases(),
        *_secret_cases(1000),
        *_secret_cases(3000),
        *_body_cases(),
    ]
    rows = []
    for name, before, after in cases:
        slow = "add a known secret" in name
        was = _timed(before, max(5, number // 2000) if slow else number, repeat)
        now = _timed(after, number, repeat)
        rows.append(
            {
                "case": name,
                "before_us": [round(v, 2) for v in (min(was), statistics.median(was), max(was))],
                "after_us": [round(v, 2) for v in (min(now), statistics.median(now), max(now))],
                "ratio": round(statistics.median(was) / statistics.median(now), 1),
            }
        )
    access.configure(None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    rows = asyncio.run(_all(args.number, args.repeat))
    head = f"{'case':<44} {'before µs min/med/max':>24} {'after µs min/med/max':>24} {'×':>7}"
    print(head)
    for row in rows:
        before = "/".join(f"{v:g}" for v in row["before_us"])
        after = "/".join(f"{v:g}" for v in row["after_us"])
        print(f"{row['case']:<44} {before:>24} {after:>24} {row['ratio']:>7}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"micro-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"repeat": args.repeat, "number": args.number, "rows": rows}))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
