"""Workers: throughput at 16 connections with `serve --workers 1` and `--workers 2`.

Linear scaling would double the throughput. On a 2-core machine the load generator (wrk)
and the upstream (nginx) need CPU too, so the gateway cannot have a core per worker: the
table says how the cores were shared during each run (CPU seconds per second of each
party), which is what bounds the factor here.
"""

from __future__ import annotations

import os
from dataclasses import replace

from benchmarks.context import SMALL_GET, Context, Spread, Table
from benchmarks.procs import CpuMeter, ProcessTree
from benchmarks.proxy import register
from benchmarks.servers import start_gateway

__all__ = ["run"]

CONNECTIONS = 16
PLAIN, BOUND = "small GET", "small GET bound by X-PowerMem-Instance"


def run(ctx: Context) -> None:
    gateways = {
        n: start_gateway(f"workers-{n}", ctx.work, ctx.upstream_url, workers=n) for n in (1, 2)
    }
    upstream = ProcessTree(ctx.upstream_pid) if ctx.upstream_pid else None
    shares = Table(
        f"Workers: how the {os.cpu_count()} cores were shared at {CONNECTIONS} connections "
        "(CPU seconds per second; last repetition)",
        ("case", "workers", "rps", "gateway", "nginx upstream", "wrk", "rest of the machine"),
    )
    try:
        loads = {
            n: {
                PLAIN: SMALL_GET,
                # Each gateway has its own data dir: register the same key with each.
                BOUND: replace(
                    SMALL_GET,
                    headers={"X-PowerMem-Instance": register(g.url, "sk-bench-workers-0123456789")},
                ),
            }
            for n, g in gateways.items()
        }
        last: dict[tuple[str, int], tuple[str, ...]] = {}
        for rep in range(ctx.reps):
            for case in (PLAIN, BOUND):
                direct = ctx.wrk(ctx.upstream_url, SMALL_GET, CONNECTIONS, rep=rep)
                for n, gateway in gateways.items():
                    nginx = CpuMeter(upstream) if upstream else None
                    measured = ctx.wrk(
                        gateway.url,
                        loads[n][case],
                        CONNECTIONS,
                        rep=rep,
                        tree=gateway.gateway_tree(),
                    )
                    via = f"gateway, {n} worker{'s' if n > 1 else ''}"
                    ctx.add("workers", case, CONNECTIONS, via, direct, measured)
                    upstream_cores = nginx.cores() if nginx else 0.0
                    rest = (measured.machine_cores or 0) - (measured.cores or 0)
                    rest -= upstream_cores + (measured.wrk_cores or 0)
                    last[(case, n)] = (
                        f"{measured.rps:,.0f}",
                        f"{measured.cores or 0:.2f}",
                        f"{upstream_cores:.2f}",
                        f"{measured.wrk_cores or 0:.2f}",
                        f"{max(rest, 0.0):.2f}",
                    )
        for (case, n), cells in last.items():
            shares.add(case, n, *cells)
        ctx.tables.append(shares)
        _targets(ctx)
    finally:
        for gateway in gateways.values():
            gateway.stop()


def _targets(ctx: Context) -> None:
    for case in (PLAIN, BOUND):
        one = ctx.find("workers", case, CONNECTIONS, "gateway, 1 worker")
        two = ctx.find("workers", case, CONNECTIONS, "gateway, 2 workers")
        if one is None or two is None:
            continue
        factors = Spread.of(
            b.measured.rps / a.measured.rps / 2
            for a, b in zip(one.samples, two.samples, strict=True)
            if a.measured.rps
        )
        ctx.target(
            f"workers: 2 vs 1, {case}, c={CONNECTIONS} (share of linear)",
            ">= 0.8 where cores allow",
            factors,
            None if factors is None else factors.mid >= 0.8,
            "{:.2f}",
        )
