"""Registry lookups in-process: hit and miss cost at 10, 10 000 and 100 000 instances.

    python -m benchmarks --only lookup      # with the rest of the suite's report
    python -m benchmarks.lookup             # alone, no wrk or nginx needed

A *hit* is `await registry.get(id)` (bound by id) or `await registry.resolve(config)` (bound
by LLM headers: HMAC fingerprint, then the cache) for a record this process has cached: one
change-counter read plus a dict lookup (gateway.instances.cache). A *miss* is the same call
right after the cache was emptied: the shared lock, one indexed read on the registry's
worker thread, the fill. Each figure is min / median / max over the repetitions, in µs of
wall time per call on an otherwise idle event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Spread, Table
from benchmarks.scale import seeded, sizes
from benchmarks.seed import KEY_FORMAT, MODEL, seed
from gateway.instances.cache import CAPACITY
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.settings import Settings

__all__ = ["SIZES", "measure", "run"]

SIZES = (10, 10_000, 100_000)
REPEAT = 3
HITS = 100_000  # calls per hit measurement
MISSES = 1_000  # calls per miss measurement
HOT = 1_000  # distinct instances the hits cycle through


def _config(i: int) -> InstanceConfig:
    return InstanceConfig.parse(provider="openai", model=MODEL, api_key=KEY_FORMAT % i)


async def _per_call(calls: int, call: Callable[[int], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    for n in range(calls):
        await call(n)
    return (time.perf_counter() - start) / calls * 1e6


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 2),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


async def _size(home: Path, ids: list[str]) -> dict[str, Any]:
    count = len(ids)
    settings = Settings(
        data_dir=home / "gateway",
        instances_file=home / "instances.yaml",
        env_file=home / "powermem.env",
        upstream="http://127.0.0.1:9",
    )
    registry = await Registry.open(settings)
    try:
        rng = random.Random(count)
        hot = rng.sample(range(count), min(HOT, count))
        hot_ids = [ids[i] for i in hot]
        hot_configs = [_config(i) for i in hot]
        for instance_id in hot_ids:
            await registry.get(instance_id)
        cache = registry.store.cache
        result: dict[str, list[float]] = {"get hit": [], "resolve hit": [], "get miss": []}
        result["resolve miss"] = []
        for _ in range(REPEAT):
            result["get hit"].append(
                await _per_call(HITS, lambda n: registry.get(hot_ids[n % len(hot_ids)]))
            )
            result["resolve hit"].append(
                await _per_call(
                    HITS // 4, lambda n: registry.resolve(hot_configs[n % len(hot_configs)])
                )
            )

            async def get_miss(n: int) -> Any:
                cache.clear()
                return await registry.get(ids[rng.randrange(count)])

            async def resolve_miss(n: int) -> Any:
                cache.clear()
                return await registry.resolve(_config(rng.randrange(count)))

            result["get miss"].append(await _per_call(MISSES, get_miss))
            result["resolve miss"].append(await _per_call(MISSES // 4, resolve_miss))
            for instance_id in hot_ids:  # warm again for the next hit round
                await registry.get(instance_id)
        cache.clear()
        gc.collect()
        tracemalloc.start()
        for instance_id in ids[: min(count, CAPACITY)]:
            await registry.get(instance_id)
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {
            **{name: _spread(values) for name, values in result.items()},
            "records cached": min(count, CAPACITY),
            "cache memory (MiB)": round(held / 2**20, 1),
        }
    finally:
        await registry.close()


def measure(
    sizes: tuple[int, ...] = SIZES,
    work: Path | None = None,
    seeded: Callable[[int], tuple[Path, list[str]]] | None = None,
) -> dict[str, Any]:
    """Figures per size; `seeded(count)` gives a data dir already seeded (else one is made)."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pmgw-lookup-", dir=work) as tmp:
        for count in sizes:
            if seeded is not None:
                home, ids = seeded(count)
            else:
                home = Path(tmp) / f"lookup-{count}"
                home.mkdir()
                ids = seed(home / "gateway", home / "instances.yaml", count)
            results[str(count)] = asyncio.run(_size(home, ids))
            print(f"  {count:>7,} instances: " + _line(results[str(count)]), flush=True)
    return results


def _line(figures: dict[str, Any]) -> str:
    parts = []
    for name in ("get hit", "resolve hit", "get miss", "resolve miss"):
        spread = figures[name]
        parts.append(f"{name} {spread['median']:.1f} µs ({spread['min']:.1f}–{spread['max']:.1f})")
    parts.append(f"{figures['records cached']:,} cached in {figures['cache memory (MiB)']} MiB")
    return "; ".join(parts)


def run(ctx: Context) -> None:
    """The `lookup` family of `python -m benchmarks`: a table, and results.json."""
    results = measure(sizes(ctx), ctx.work, lambda count: seeded(ctx, count))
    ctx.extra["registry_lookup_us"] = results
    names = ("get hit", "resolve hit", "get miss", "resolve miss")
    table = Table(
        "Registry lookups in-process (µs per call, idle event loop)",
        ("instances", *names, "cached records (MiB)"),
    )
    for count, figures in results.items():
        cells = [_spread_text(figures[name]) for name in names]
        cached = f"{figures['records cached']:,} ({figures['cache memory (MiB)']})"
        table.add(f"{int(count):,}", *cells, cached)
    ctx.tables.append(table)
    hits = Spread.of(results[c]["get hit"]["median"] for c in results)
    ctx.target(
        "registry hit (get by id), every size",
        "<= 5 µs",
        hits,
        hits is not None and hits.high <= 5,
        "{:.2f} µs",
    )


def _spread_text(figure: dict[str, float]) -> str:
    return Spread(figure["min"], figure["median"], figure["max"]).text("{:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    measure(tuple(int(s) for s in args.sizes.split(",")))
