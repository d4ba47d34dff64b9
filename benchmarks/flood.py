"""Flood (issue 12): does one abusive client make the gateway slow for everyone?

Two paced probes (wrk, one connection each, a request every 10 ms) measure the p99 of
`/gateway/health` and of a small proxied GET, first on a quiet gateway, then during each
flood, in every repetition; the gateway's RSS (supervisor and workers) is read before,
during (peak) and after each flood, and once more at the end after the relay's idle
provider connections have been closed.

The floods (benchmarks/floodgen.py): implicit registrations, /metrics scrapes, slow
clients, and calls to 1 000+ provider origins. The gateway runs as shipped: wrk's one
address gets its first 100 registrations, then cheap 429s (the per-address cap), and the
instances it made stay cached. With both caps off every request would create an instance
and each worker's record cache would keep up to 20 000 of them (gateway.instances.cache),
a growth of RSS that is the cache doing its job, not a leak. The provider origins need LLM
calls: bound memory adds reach a tiny upstream (benchmarks/bench_upstream.py) that calls the
gateway's relay with the request's baggage, as powermem does, so every call goes through the
relay to a random one of those origins.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from benchmarks.context import ADMIN_TOKEN, Context, Spread, Table
from benchmarks.floodgen import Flood, register_origins
from benchmarks.floodgen import floods as make_floods
from benchmarks.procs import CpuMeter, Proc, ProcessTree, RssSampler, free_port
from benchmarks.profile import profile
from benchmarks.servers import RELAY_TOKEN, start_fake_providers, start_gateway
from benchmarks.wrk import Load, WrkResult, run_wrk

__all__ = ["run"]

PROBES = {
    "/gateway/health": Load(path="/gateway/health", delay_ms=10),
    "proxied GET": Load(path="/api/v1/memories?user_id=probe&limit=1", delay_ms=10),
}
SETTLE = 2.0  # seconds after a flood before "after" is read
IDLE_CLOSE = 35.0  # the relay closes provider connections idle 30 s (gateway.relay.client)


def run(ctx: Context) -> None:
    origins = 200 if ctx.quick else 1200
    slow = 500 if ctx.quick else 2000
    probe_seconds = 2.0 if ctx.quick else max(3.0, ctx.seconds)
    fake, fake_url, ports = start_fake_providers(ctx.work, ports=origins)
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
        )
        procs.append(gateway)
        ids = register_origins(gateway.url, ports)
        # As many instances (and keys), all at the fake's main port: the control.
        main_port = int(fake_url.rsplit(":", 1)[1])
        control = register_origins(gateway.url, [main_port] * origins, "control")
        tree = gateway.gateway_tree()
        floods = make_floods(
            ctx.work, gateway.port, tree, origin_ids=ids, control_ids=control, slow=slow
        )
        figures, start_rss = _measure(ctx, gateway.url, tree, floods, probe_seconds)
        idle = 5.0 if ctx.quick else IDLE_CLOSE
        time.sleep(idle)
        _report(ctx, figures, (start_rss, tree.rss_mb(), idle), origins, slow)
        for flood in floods:
            if flood.load is not None and flood.name.startswith("relay calls"):
                name = "flood-control" if "control" in flood.name else "flood-origins"
                profile(ctx, name, gateway.pid, gateway.url, flood.load, 8)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _probe(url: str, seconds: float) -> dict[str, WrkResult]:
    with ThreadPoolExecutor(len(PROBES)) as pool:
        futures: dict[str, Future[WrkResult]] = {
            name: pool.submit(run_wrk, url, load, connections=1, seconds=seconds, warmup=0)
            for name, load in PROBES.items()
        }
        return {name: f.result() for name, f in futures.items()}


@dataclass
class Figures:
    """One flood's figures over the repetitions."""

    quiet: dict[str, list[float]] = field(default_factory=dict)  # probe → p99 (ms)
    flooded: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[float]] = field(default_factory=dict)  # before / peak / after
    instances: list[int] = field(default_factory=list)  # registered when the flood began
    did: str = ""

    def ratios(self, probe: str) -> Spread | None:
        return Spread.of(
            f / q if q else None
            for q, f in zip(self.quiet[probe], self.flooded[probe], strict=True)
        )


def _measure(
    ctx: Context, url: str, tree: ProcessTree, floods: list[Flood], seconds: float
) -> tuple[dict[str, Figures], float]:
    """Each flood's figures, and the RSS at the start. Every flood is compared with a quiet
    probe taken just before it, so a busy moment of the machine moves both."""
    figures = {flood.name: Figures() for flood in floods}
    _probe(url, 1.0)  # warm the probes' paths
    start_rss = tree.rss_mb()
    for _ in range(ctx.reps):
        for flood in floods:
            got = figures[flood.name]
            # Quiet means quiet: whatever the last flood left queued is done first.
            _wait_idle(tree)
            got.instances.append(_instances(url))
            calm = _probe(url, seconds)
            before = tree.rss_mb()
            sampler = RssSampler(tree)
            with sampler.running():
                ramp = min(flood.ramp, 3.0) if ctx.quick else flood.ramp
                done = flood.start(ramp + seconds + 0.5)
                time.sleep(ramp)
                loud = _probe(url, seconds)
                got.did = done()
            time.sleep(SETTLE)
            for key, value in (
                ("before", before),
                ("peak", sampler.peak),
                ("after", tree.rss_mb()),
            ):
                got.rss.setdefault(key, []).append(value)
            for probe in PROBES:
                got.quiet.setdefault(probe, []).append(calm[probe].p99_ms)
                got.flooded.setdefault(probe, []).append(loud[probe].p99_ms)
            print(
                f"  {flood.name}: p99 "
                + ", ".join(f"{n} {calm[n].p99_ms:.2f} → {loud[n].p99_ms:.2f} ms" for n in PROBES)
                + f"; RSS {before:.0f} → {sampler.peak:.0f} → {got.rss['after'][-1]:.0f} MiB;"
                f" {got.did}",
                flush=True,
            )
    return figures, start_rss


def _wait_idle(tree: ProcessTree, *, below: float = 0.1, longest: float = 30.0) -> None:
    """Until the gateway uses less than `below` cores over half a second (or `longest`)."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        meter = CpuMeter(tree)
        time.sleep(0.5)
        if meter.cores() < below:
            return


def _instances(url: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url + "/gateway/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        count: int = json.load(response)["data"]["instances"]
        return count


def _report(
    ctx: Context,
    figures: dict[str, Figures],
    memory: tuple[float, float, float],
    origins: int,
    slow: int,
) -> None:
    start_rss, end_rss, idle = memory
    table = Table(
        "Flood: p99 under each flood vs quiet just before (ms), and gateway RSS (MiB): "
        "median (min–max)",
        (
            "flood",
            "probe",
            "quiet p99",
            "flood p99",
            "p99 ratio",
            "RSS before",
            "RSS peak",
            "RSS after",
            "instances",
            "the flood did (last repetition)",
        ),
    )
    for flood, got in figures.items():
        mem = {k: Spread.of(v) for k, v in got.rss.items()}
        for probe in PROBES:
            ratio = got.ratios(probe)
            table.add(
                flood,
                probe,
                _text(Spread.of(got.quiet[probe]), "{:.2f}"),
                _text(Spread.of(got.flooded[probe]), "{:.2f}"),
                _text(ratio, "{:.1f}"),
                *(_text(mem.get(k), "{:.0f}") for k in ("before", "peak", "after")),
                _text(Spread.of(got.instances), "{:,.0f}"),
                got.did,
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
        f"{origins:,} provider origins, {slow:,} slow clients; probes: one request every 10 ms "
        "on each of two connections"
    )
    ctx.tables.append(table)
    ctx.target(
        "flood: RSS after all floods vs start",
        "within 10 %",
        f"{start_rss:.0f} → {end_rss:.0f} MiB ({change:+.0%})",
        abs(change) <= 0.10,
    )
    ctx.extra["flood"] = {
        name: {
            "quiet_p99_ms": f.quiet,
            "flood_p99_ms": f.flooded,
            "rss_mb": f.rss,
            "instances": f.instances,
            "did": f.did,
        }
        for name, f in figures.items()
    }
    ctx.extra["flood_rss_start_end_mb"] = [start_rss, end_rss]


def _text(spread: Spread | None, fmt: str) -> str:
    return spread.text(fmt) if spread is not None else "–"
