"""The floods of the `flood` family: each starts in the background and says what it did.

- registrations: wrk, a GET with LLM headers carrying a new API key every request;
- /metrics: wrk scraping with the admin token;
- slow clients: benchmarks/slowclients.py, thousands of connections from 127.0.0.x
  addresses sending their heads a byte a second;
- provider origins: wrk, bound memory adds naming a random one of 1 000+ instances whose
  base URLs are distinct loopback ports of one fake provider.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.context import ADMIN_TOKEN, post_json
from benchmarks.procs import ProcessTree
from benchmarks.wrk import Load, run_wrk

__all__ = ["Flood", "floods", "register_origins"]

# A flood's start(seconds) begins it in the background; the function it returns waits for it
# to end and says what it did.
Start = Callable[[float], Callable[[], str]]
SLOW_RAMP = 16.0


@dataclass
class Flood:
    name: str
    start: Start
    # The request shape of a wrk flood (for profiling it), else None.
    load: Load | None = None
    # Seconds it runs before the probes start.
    ramp: float = 1.5


def register_origins(url: str, ports: list[int], prefix: str = "origin") -> list[str]:
    """One instance per port (`http://127.0.0.1:<port>/v1`), registered with the admin token
    (not subject to the registration caps)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ids = []
    for n, port in enumerate(ports):
        answer = post_json(
            url + "/api/v1/instances",
            {
                "client": "flood",
                "provider": "openai",
                "model": "bench-model",
                "api_key": f"sk-bench-{prefix}-{n:05d}-0123456789",
                "base_url": f"http://127.0.0.1:{port}/v1",
            },
            admin,
        )
        ids.append(answer["data"]["instance_id"])
    return ids


def _wrk_flood(url: str, load: Load, connections: int, tree: ProcessTree) -> Start:
    def start(seconds: float) -> Callable[[], str]:
        pool = ThreadPoolExecutor(1)
        future = pool.submit(
            run_wrk, url, load, connections=connections, seconds=seconds, warmup=0, tree=tree
        )

        def done() -> str:
            result = future.result()
            pool.shutdown()
            # The probes' few requests are in the CPU too, but not in the count.
            return (
                f"{result.rps:,.0f} req/s, {result.errors} non-2xx, "
                f"{result.cpu_us or 0:,.0f} µs gateway CPU each"
            )

        return done

    return start


def _slow_flood(port: int, connections: int) -> Start:
    def start(seconds: float) -> Callable[[], str]:
        argv = [
            sys.executable,
            "-m",
            "benchmarks.slowclients",
            "--port",
            str(port),
            "--connections",
            str(connections),
            "--seconds",
            str(seconds),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)

        def done() -> str:
            out, _ = proc.communicate(timeout=seconds + 60)
            stats = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
            return (
                f"{stats.get('most_open', 0):,} held at once, {stats.get('opened', 0):,} opened,"
                f" {stats.get('cut_by_gateway', 0):,} cut by the gateway"
            )

        return done

    return start


def _ids(work: Path, name: str, ids: list[str]) -> Path:
    path = work / f"flood-{name}-ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def floods(
    work: Path,
    port: int,
    tree: ProcessTree,
    *,
    origin_ids: list[str],
    control_ids: list[str],
    slow: int,
) -> list[Flood]:
    """The floods, in order, against the gateway at `port` (whose CPU is `tree`);
    `origin_ids` name instances with distinct base URLs, `control_ids` as many instances
    with one base URL (the same relay load and keys, one origin)."""
    url = f"http://127.0.0.1:{port}"
    registrations = Load(
        path="/api/v1/memories?user_id=flood&limit=1",
        headers={
            "X-PowerMem-LLM-Provider": "openai",
            "X-PowerMem-LLM-Model": "gpt-4o-mini",
            "X-PowerMem-LLM-Api-Key": "set per request by bench.lua",
        },
        mode="unique",
    )
    metrics = Load(path="/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    body = work / "flood-add.json"
    body.write_text('{"content": "I like tea.", "user_id": "flood"}')
    origins = Load(
        method="POST",
        path="/api/v1/memories",
        headers={"Content-Type": "application/json"},
        body_file=body,
        mode="ids",
        ids_file=_ids(work, "origins", origin_ids),
    )
    control = replace(origins, ids_file=_ids(work, "control", control_ids))
    return [
        Flood(
            "registrations (new LLM headers each request)",
            _wrk_flood(url, registrations, 8, tree),
            registrations,
        ),
        Flood("/metrics scrapes", _wrk_flood(url, metrics, 8, tree), metrics),
        # Probed once the gateway has begun cutting heads slower than its 15 s header
        # timeout (gateway.front.server.Limits), while the clients reconnect.
        Flood(
            f"{slow:,} slow clients (a byte a second)",
            _slow_flood(port, slow),
            ramp=SLOW_RAMP,
        ),
        Flood(
            f"relay calls to {len(origin_ids):,} provider origins",
            _wrk_flood(url, origins, 8, tree),
            origins,
        ),
        # The same load, instances and keys at one origin: what the origins themselves cost.
        Flood(
            f"relay calls, {len(control_ids):,} instances at 1 origin (control)",
            _wrk_flood(url, control, 8, tree),
            control,
        ),
    ]
