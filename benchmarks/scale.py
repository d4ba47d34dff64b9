"""Scale: lookup latency and gateway memory with 10, 10 000 and 100 000 instances."""

from __future__ import annotations

import time
from dataclasses import replace

from benchmarks.context import SMALL_GET, Context, Row
from benchmarks.procs import rss_mb
from benchmarks.seed import KEY_FORMAT, MODEL, seed
from benchmarks.servers import start_gateway

__all__ = ["SIZES", "run"]

SIZES = (10, 10_000, 100_000)
CONNECTIONS = 16


def run(ctx: Context, sizes: tuple[int, ...] = SIZES) -> None:
    setup: dict[str, float] = {}
    for count in sizes:
        home = ctx.work / f"scale-{count}"
        home.mkdir()
        start = time.perf_counter()
        ids = seed(home / "gateway", home / "instances.yaml", count)
        setup[str(count)] = round(time.perf_counter() - start, 2)
        ids_file = home / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        gateway = start_gateway(
            f"gateway-scale-{count}", ctx.work, ctx.upstream_url, data_dir=home / "gateway"
        )
        try:
            time.sleep(1.0)
            ctx.memory_mb[f"gateway idle, {count} instances"] = round(rss_mb(gateway.pid), 1)
            # Uniformly random instances: with many of them most lookups are first sightings
            # (SQLite, then the in-process cache), with few they are all cache hits.
            loads = {
                "lookup by X-PowerMem-Instance": replace(SMALL_GET, mode="ids", ids_file=ids_file),
                "lookup by LLM headers": replace(
                    SMALL_GET,
                    headers={
                        "X-PowerMem-LLM-Provider": "openai",
                        "X-PowerMem-LLM-Model": MODEL,
                        "X-PowerMem-LLM-Api-Key": "set per request by bench.lua",
                    },
                    mode="keys",
                    key_format=KEY_FORMAT,
                    count=count,
                ),
            }
            for case, load in loads.items():
                direct = ctx.direct("small GET", SMALL_GET, CONNECTIONS)
                measured = ctx.wrk(gateway.url, load, CONNECTIONS, rss_pid=gateway.pid)
                ctx.add(
                    Row(
                        "scale",
                        f"{case}, {count:,} instances",
                        CONNECTIONS,
                        "gateway",
                        direct,
                        measured,
                    )
                )
            ctx.memory_mb[f"gateway after lookups, {count} instances"] = round(
                rss_mb(gateway.pid), 1
            )
        finally:
            gateway.stop()
    ctx.extra["scale_seed_seconds"] = setup
