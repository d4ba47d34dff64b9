"""Scale: bound requests with 10, 10 000 and 100 000 registered instances.

- *active set*: requests name one of 100 instances (all of them with 10), at random, by
  `X-PowerMem-Instance` or by the LLM headers that derive it: what a gateway with many
  registered but few busy instances sees. After the first sighting each lookup is a hit of
  the in-process cache, so this is where "flat from 10 to 100 000" must hold;
- *every instance*: requests name a uniformly random instance of all of them, so with many
  instances most are the first sighting in the worker (a registry read on its thread, then
  the cache): the worst case for a big registry, shown for context.

One connection, so the added p50 is the lookup's latency; CPU per request is the gateway's
whole process tree. The seeded data dirs are reused by the `lookup` family (in-process hit
and miss cost at the same sizes).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from benchmarks.context import SMALL_GET, Context, Table
from benchmarks.seed import KEY_FORMAT, MODEL, seed
from benchmarks.servers import start_gateway
from benchmarks.wrk import Load

__all__ = ["SIZES", "seeded", "sizes"]

SIZES = (10, 10_000, 100_000)
QUICK_SIZES = (10, 1_000)
ACTIVE = 100
BY_ID, BY_HEADERS = "active set by X-PowerMem-Instance", "active set by LLM headers"
COLD = "every instance by X-PowerMem-Instance"


def sizes(ctx: Context) -> tuple[int, ...]:
    return QUICK_SIZES if ctx.quick else SIZES


def seeded(ctx: Context, count: int) -> tuple[Path, list[str]]:
    """A data dir with `count` registered instances, seeded once per run."""
    cache: dict[int, tuple[Path, list[str]]] = ctx.extra.setdefault("_seeded", {})
    if count not in cache:
        home = ctx.work / f"seeded-{count}"
        home.mkdir()
        started = time.perf_counter()
        ids = seed(home / "gateway", home / "instances.yaml", count)
        ctx.extra.setdefault("seed_seconds", {})[str(count)] = round(
            time.perf_counter() - started, 2
        )
        cache[count] = (home, ids)
    return cache[count]


def _loads(home: Path, ids: list[str]) -> dict[str, Load]:
    active = home / "active-ids.txt"
    active.write_text("\n".join(ids[:ACTIVE]) + "\n")
    every = home / "ids.txt"
    every.write_text("\n".join(ids) + "\n")
    return {
        BY_ID: replace(SMALL_GET, mode="ids", ids_file=active),
        # Seeded keys are KEY_FORMAT % i: the first ACTIVE of them are the active set.
        BY_HEADERS: replace(
            SMALL_GET,
            headers={
                "X-PowerMem-LLM-Provider": "openai",
                "X-PowerMem-LLM-Model": MODEL,
                "X-PowerMem-LLM-Api-Key": "set per request by bench.lua",
            },
            mode="keys",
            key_format=KEY_FORMAT,
            count=min(ACTIVE, len(ids)),
        ),
        COLD: replace(SMALL_GET, mode="ids", ids_file=every),
    }


def run(ctx: Context) -> None:
    memory = Table("Gateway memory with many instances (RSS, MiB)", ("instances", "idle", "after"))
    for count in sizes(ctx):
        home, ids = seeded(ctx, count)
        loads = _loads(home, ids)
        gateway = start_gateway(
            f"scale-{count}", ctx.work, ctx.upstream_url, workers=1, data_dir=home / "gateway"
        )
        try:
            tree = gateway.gateway_tree()
            idle = tree.rss_mb()
            for rep in range(ctx.reps):
                direct = ctx.wrk(ctx.upstream_url, SMALL_GET, 1, rep=rep)
                for case, load in loads.items():
                    measured = ctx.wrk(gateway.url, load, 1, rep=rep, tree=tree)
                    ctx.add(
                        "scale",
                        f"{case}, {count:,} instances",
                        1,
                        "gateway, 1 worker",
                        direct,
                        measured,
                    )
            memory.add(f"{count:,}", f"{idle:.1f}", f"{tree.rss_mb():.1f}")
        finally:
            gateway.stop()
    ctx.tables.append(memory)
    _targets(ctx)


def _targets(ctx: Context) -> None:
    for case in (BY_ID, BY_HEADERS):
        rows = [r for r in ctx.rows if r.family == "scale" and r.case.startswith(case + ", ")]
        if len(rows) < 2:
            continue
        first, last = rows[0], rows[-1]
        if first.added_p50 is None or last.added_p50 is None:
            continue
        growth = last.added_p50.mid - first.added_p50.mid
        ctx.target(
            f"scale: {case}, added p50 from {first.case.split(', ')[-1]} to "
            f"{last.case.split(', ')[-1]}",
            "flat (within 0.05 ms)",
            f"{first.added_p50.mid:+.3f} → {last.added_p50.mid:+.3f} ms",
            abs(growth) <= 0.05,
        )
