"""Flood (issue 12): does one abusive client make the gateway slow for everyone?

Two paced probes (wrk, one connection each, a request every 10 ms) measure the p99 of
`/gateway/health` and of a small proxied GET, first on a quiet gateway, then during each
flood, in every repetition; the gateway's RSS (supervisor and workers) is read before,
during (peak) and after each flood, and once more at the end after the relay's idle
provider connections have been closed.

- registrations: wrk sends GETs with LLM headers carrying a new API key every request
  (implicit registration). The gateway runs with both registration caps off
  (`POWERMEM_GATEWAY_NEW_INSTANCES_PER_CLIENT_PER_HOUR=0`, `…_MAX_INSTANCES=0`), so every
  request really creates an instance; with the default caps wrk's one address would get
  cheap 429s after its first 100;
- /metrics: wrk scrapes `/metrics` with the admin token as fast as it can;
- slow clients: thousands of connections from several 127.0.0.x addresses, each sending
  its request head a byte a second (benchmarks/slowclients.py);
- provider origins: 1 000+ instances, each with its own base URL (one fake provider
  listening on as many loopback ports); bound memory adds reach a tiny upstream
  (benchmarks/bench_upstream.py) that calls the gateway's relay with the request's
  baggage, so every call goes through the relay to a random one of those origins.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.context import ADMIN_TOKEN, Context, Spread, Table, post_json
from benchmarks.procs import Proc, ProcessTree, RssSampler, free_port
from benchmarks.servers import RELAY_TOKEN, start_fake_providers, start_gateway
from benchmarks.wrk import Load, WrkResult, run_wrk

__all__ = ["run"]

PROBES = {
    "/gateway/health": Load(path="/gateway/health", delay_ms=10),
    "proxied GET": Load(path="/api/v1/memories?user_id=probe&limit=1", delay_ms=10),
}
RAMP = 1.5  # seconds a flood runs before the probes start
SETTLE = 3.0  # seconds after a flood before "after" is read
IDLE_CLOSE = 35.0  # the relay closes provider connections idle 30 s (gateway.relay.client)


@dataclass
class Flood:
    name: str
    start: Callable[[float], Callable[[], str]]


def run(ctx: Context) -> None:
    origins = 200 if ctx.quick else 1200
    slow = 500 if ctx.quick else 2000
    probe_seconds = 2.0 if ctx.quick else max(4.0, ctx.seconds + 1)
    fake, _, ports = start_fake_providers(ctx.work, ports=origins)
    port = free_port()
    upstream_port = free_port()
    upstream = Proc(
        "flood-upstream",
        [
            sys.executable,
            "-m",
            "benchmarks.bench_upstream",
            "--port",
            str(upstream_port),
            "--relay",
            f"http://127.0.0.1:{port}",
            "--token",
            RELAY_TOKEN,
        ],
        ctx.work,
    )
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    procs: list[Proc] = [fake, upstream]
    try:
        upstream.wait_http(upstream_url + "/")
        gateway = start_gateway(
            "flood",
            ctx.work,
            upstream_url,
            workers=2,
            port=port,
            environ={
                "POWERMEM_GATEWAY_NEW_INSTANCES_PER_CLIENT_PER_HOUR": "0",
                "POWERMEM_GATEWAY_MAX_INSTANCES": "0",
            },
        )
        procs.append(gateway)
        ids = _register_origins(gateway.url, ports)
        ids_file = ctx.work / "flood-origin-ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        floods = _floods(ctx, gateway.port, ids_file, slow)
        tree = gateway.gateway_tree()
        _measure(ctx, gateway.url, tree, floods, probe_seconds, origins, slow)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _register_origins(url: str, ports: list[int]) -> list[str]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ids = []
    for n, port in enumerate(ports):
        answer = post_json(
            url + "/api/v1/instances",
            {
                "client": "flood",
                "provider": "openai",
                "model": "bench-model",
                "api_key": f"sk-bench-origin-{n:05d}-0123456789",
                "base_url": f"http://127.0.0.1:{port}/v1",
            },
            admin,
        )
        ids.append(answer["data"]["instance_id"])
    return ids


def _wrk_flood(url: str, load: Load, connections: int) -> Callable[[float], Callable[[], str]]:
    def start(seconds: float) -> Callable[[], str]:
        pool = ThreadPoolExecutor(1)
        future = pool.submit(run_wrk, url, load, connections=connections, seconds=seconds, warmup=0)

        def done() -> str:
            result = future.result()
            pool.shutdown()
            return f"{result.rps:,.0f} req/s, {result.errors} non-2xx"

        return done

    return start


def _slow_flood(port: int, connections: int) -> Callable[[float], Callable[[], str]]:
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


def _floods(ctx: Context, port: int, ids_file: Path, slow: int) -> list[Flood]:
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
    body = ctx.work / "flood-add.json"
    body.write_text('{"content": "I like tea.", "user_id": "flood"}')
    origins = Load(
        method="POST",
        path="/api/v1/memories",
        headers={"Content-Type": "application/json"},
        body_file=body,
        mode="ids",
        ids_file=ids_file,
    )
    return [
        Flood("registrations (new LLM headers each request)", _wrk_flood(url, registrations, 8)),
        Flood("/metrics scrapes", _wrk_flood(url, metrics, 8)),
        Flood(f"{slow:,} slow clients (a byte a second)", _slow_flood(port, slow)),
        Flood("provider origins (bound adds through the relay)", _wrk_flood(url, origins, 8)),
    ]


def _probe(url: str, seconds: float) -> dict[str, WrkResult]:
    with ThreadPoolExecutor(len(PROBES)) as pool:
        futures: dict[str, Future[WrkResult]] = {
            name: pool.submit(run_wrk, url, load, connections=1, seconds=seconds, warmup=0)
            for name, load in PROBES.items()
        }
        return {name: f.result() for name, f in futures.items()}


def _measure(
    ctx: Context,
    url: str,
    tree: ProcessTree,
    floods: list[Flood],
    seconds: float,
    origins: int,
    slow: int,
) -> None:
    quiet: dict[str, list[float]] = {name: [] for name in PROBES}
    under: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    rss: dict[str, dict[str, list[float]]] = {}
    notes: dict[str, str] = {}
    _probe(url, 1.0)  # warm the probes' paths
    start_rss = tree.rss_mb()
    for _ in range(ctx.reps):
        calm = _probe(url, seconds)
        for name, result in calm.items():
            quiet[name].append(result.p99_ms)
        print("  quiet: " + ", ".join(f"{n} p99 {r.p99_ms:.2f} ms" for n, r in calm.items()))
        for flood in floods:
            before = tree.rss_mb()
            sampler = RssSampler(tree)
            with sampler.running():
                done = flood.start(RAMP + seconds + 0.5)
                time.sleep(RAMP)
                got = _probe(url, seconds)
                notes[flood.name] = done()
            time.sleep(SETTLE)
            after = tree.rss_mb()
            figures = rss.setdefault(flood.name, {"before": [], "peak": [], "after": []})
            figures["before"].append(before)
            figures["peak"].append(sampler.peak)
            figures["after"].append(after)
            for name, result in got.items():
                under.setdefault((flood.name, name), []).append(result.p99_ms)
                ratios.setdefault((flood.name, name), []).append(
                    result.p99_ms / calm[name].p99_ms if calm[name].p99_ms else 0.0
                )
            print(
                f"  {flood.name}: "
                + ", ".join(f"{n} p99 {r.p99_ms:.2f} ms" for n, r in got.items())
                + f"; RSS {before:.0f} → {sampler.peak:.0f} → {after:.0f} MiB; {notes[flood.name]}",
                flush=True,
            )
    idle = 5.0 if ctx.quick else IDLE_CLOSE
    time.sleep(idle)
    end_rss = tree.rss_mb()
    _report(ctx, quiet, under, ratios, rss, notes, (start_rss, end_rss, idle), origins, slow)


def _report(
    ctx: Context,
    quiet: dict[str, list[float]],
    under: dict[tuple[str, str], list[float]],
    ratios: dict[tuple[str, str], list[float]],
    rss: dict[str, dict[str, list[float]]],
    notes: dict[str, str],
    memory: tuple[float, float, float],
    origins: int,
    slow: int,
) -> None:
    start_rss, end_rss, idle = memory
    table = Table(
        "Flood: p99 under each flood vs quiet (ms), and gateway RSS (MiB): median (min–max)",
        (
            "flood",
            "probe",
            "quiet p99",
            "flood p99",
            "p99 ratio",
            "RSS before",
            "RSS peak",
            "RSS after",
            "the flood did",
        ),
    )
    for (flood, probe), values in under.items():
        spread = Spread.of(values)
        ratio = Spread.of(ratios[(flood, probe)])
        calm = Spread.of(quiet[probe])
        mem = {k: Spread.of(v) for k, v in rss[flood].items()}
        table.add(
            flood,
            probe,
            calm.text("{:.2f}") if calm else "–",
            spread.text("{:.2f}") if spread else "–",
            ratio.text("{:.1f}") if ratio else "–",
            *(mem[k].text("{:.0f}") if mem[k] else "–" for k in ("before", "peak", "after")),
            notes.get(flood, ""),
        )
        ctx.target(
            f"flood p99 ratio, {probe}, during {flood}",
            "<= 2x quiet",
            ratio,
            ratio is not None and ratio.mid <= 2.0,
            "{:.1f}x",
        )
    change = (end_rss - start_rss) / start_rss if start_rss else 0.0
    table.notes.append(
        f"RSS at the start {start_rss:.0f} MiB, at the end {end_rss:.0f} MiB "
        f"({change:+.0%}) after {idle:.0f} s idle; gateway with 2 workers, "
        f"{origins:,} provider origins, {slow:,} slow clients"
    )
    ctx.tables.append(table)
    ctx.target(
        "flood: RSS after all floods vs start",
        "within 10 %",
        f"{start_rss:.0f} → {end_rss:.0f} MiB ({change:+.0%})",
        abs(change) <= 0.10,
    )
    ctx.extra["flood"] = {
        "quiet_p99_ms": quiet,
        "flood_p99_ms": {f"{k[0]} | {k[1]}": v for k, v in under.items()},
        "rss_mb": rss,
        "rss_start_end_mb": [start_rss, end_rss],
        "floods": notes,
    }
