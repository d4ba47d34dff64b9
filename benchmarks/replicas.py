"""The registry behind bound requests: SQLite vs PostgreSQL, cached vs read-through (issue 13).

    python -m benchmarks --only replicas

For 10, 10 000 and 100 000 instances, the same gateway serves a small GET bound by a random
`X-PowerMem-Instance` — from 100 instances in use (a team's working set: after the warm-up,
cache hits) and from all of them (mostly first sightings: reads of the store) — with its
registry in

- SQLite in its data dir (the one-machine default: in-process cache + change file);
- PostgreSQL, cached (`--registry-cache`, the default): in-process cache kept honest by
  LISTEN/NOTIFY with confirmations and leases;
- PostgreSQL, read-through (`--no-registry-cache`): one indexed row read per bound request;

each against the direct call at 1 connection (added p50) and 16 (throughput). Then, with the
cached variant on two more replicas that have the record cached, the time from an update's
commit until the last replica has confirmed dropping its copy (what a PUT waits for before
it answers), over `UPDATES` updates; and what the relay's nonce check costs when powermem's
call lands on another replica than its request (gateway.proxy.cluster) against a local one.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from benchmarks.context import SMALL_GET, Context, Row
from benchmarks.postgres import Postgres
from benchmarks.seed import rows_for, seed
from benchmarks.servers import RELAY_TOKEN, Gateway, start_gateway
from gateway.instances.registry import Registry
from gateway.instances.store import Row as StoredRow
from gateway.settings import Settings

__all__ = ["SIZES", "run"]

SIZES = (10, 10_000, 100_000)
CONNECTIONS = (1, 16)
SECRET = "benchmark-team-secret-0123456789abcdef"
UPDATES = 50
HOT = 100
VARIANTS = ("sqlite", "postgresql, cached", "postgresql, read-through")


def _seed_postgres(url: str, count: int) -> list[str]:
    """`count` instances in a fresh PostgreSQL registry, in one COPY."""
    import psycopg

    async def build() -> list[StoredRow]:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                data_dir=Path(tmp),
                instances_file=Path(tmp) / "i.yaml",
                database_url=url,
                secret=SECRET,
            )
            registry = await Registry.open(settings)
            try:
                key_id = await registry.store.run(registry.store.store.master_key_id)
                return rows_for(registry, key_id, count)
            finally:
                await registry.close()

    rows = asyncio.run(build())
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        columns = ", ".join(StoredRow.__dataclass_fields__)
        with cur.copy(f"COPY powermem_gateway.instances ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(getattr(row, c) for c in StoredRow.__dataclass_fields__))
        cur.execute("ANALYZE powermem_gateway.instances")
    return [r.instance_id for r in rows]


def _gateway(ctx: Context, name: str, home: Path, url: str | None, cached: bool) -> Gateway:
    extra: tuple[str, ...] = ()
    env = {}
    if url is not None:
        extra = ("--database-url", url, "--registry-cache" if cached else "--no-registry-cache")
        env = {"POWERMEM_GATEWAY_SECRET": SECRET}
    return start_gateway(
        name, ctx.work, ctx.upstream_url, data_dir=home / name, extra=extra, env=env
    )


def _get(url: str, instance_id: str) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback only
        url + SMALL_GET.path, headers={"X-PowerMem-Instance": instance_id}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        response.read()


def _invalidation(ctx: Context, url: str, ids: list[str], home: Path) -> dict[str, float]:
    """Commit → the last of two other replicas confirmed dropping the updated record."""
    replicas = [_gateway(ctx, f"replica-{n}", home, url, True) for n in range(2)]
    try:
        for replica in replicas:
            _get(replica.url, ids[0])  # now cached there

        async def updates() -> list[float]:
            settings = Settings(
                data_dir=home / "writer",
                instances_file=home / "writer.yaml",
                database_url=url,
                secret=SECRET,
                relay_token=RELAY_TOKEN,
            )
            registry = await Registry.open(settings)
            waits = []
            try:
                for n in range(UPDATES):
                    await registry.update(ids[0], {"model": f"bench-{n}"})
                    waits.append(registry.store.changes.last_wait * 1000)  # type: ignore[attr-defined]
                    for replica in replicas:  # cached again before the next update
                        await asyncio.to_thread(_get, replica.url, ids[0])
            finally:
                await registry.close()
            return waits

        waits = asyncio.run(updates())
    finally:
        for replica in replicas:
            replica.stop()
    waits.sort()
    return {
        "replicas_confirming": 3,  # the two gateways and the writer itself
        "updates": UPDATES,
        "p50_ms": round(statistics.median(waits), 3),
        "p90_ms": round(waits[int(len(waits) * 0.9)], 3),
        "max_ms": round(waits[-1], 3),
    }


def run(ctx: Context, sizes: tuple[int, ...] = SIZES) -> None:
    postgres = Postgres()
    try:
        for count in sizes:
            home = ctx.work / f"replicas-{count}"
            home.mkdir()
            started = time.perf_counter()
            # Each registry derives ids with its own key: one ids file per kind.
            url = postgres.create(f"bench_{count}")
            ids = {
                "sqlite": seed(home / "sqlite", home / "instances.yaml", count),
                "postgresql": _seed_postgres(url, count),
            }
            ctx.extra.setdefault("replicas_seed_seconds", {})[str(count)] = round(
                time.perf_counter() - started, 1
            )
            for variant in VARIANTS:
                kind = variant.split(",")[0]
                loads = {}
                for name, chosen in (
                    (f"{min(count, HOT)} in use of {count:,}", ids[kind][:HOT]),
                    (f"all {count:,} in use", ids[kind]),
                ):
                    if count <= HOT and loads:
                        break  # with 10 instances both are the same
                    ids_file = home / f"ids-{kind}-{len(chosen)}.txt"
                    ids_file.write_text("\n".join(chosen) + "\n")
                    loads[name] = replace(SMALL_GET, mode="ids", ids_file=ids_file)
                if variant == "sqlite":
                    gateway = start_gateway(
                        f"sqlite-{count}", ctx.work, ctx.upstream_url, data_dir=home / "sqlite"
                    )
                else:
                    gateway = _gateway(
                        ctx, f"pg-{count}-{variant[12:16]}", home, url, variant.endswith("cached")
                    )
                try:
                    time.sleep(0.5)
                    for name, load in loads.items():
                        for conns in CONNECTIONS:
                            direct = ctx.direct("small GET", SMALL_GET, conns)
                            measured = ctx.wrk(gateway.url, load, conns, rss_pid=gateway.pid)
                            case = f"bound by id, {name}"
                            ctx.add(Row("replicas", case, conns, variant, direct, measured))
                finally:
                    gateway.stop()
            if count == sizes[-1]:
                ctx.extra["invalidation"] = _invalidation(ctx, url, ids["postgresql"], home)
                print(f"  commit -> last replica dropped its copy: {ctx.extra['invalidation']}")
                ctx.extra["relay_nonce_check"] = _ledger(url)
                print(f"  relay nonce check, µs per call: {ctx.extra['relay_nonce_check']}")
    finally:
        postgres.stop()


def _ledger(url: str, calls: int = 300) -> dict[str, float]:
    """A relay call's nonce check: local (shared memory) vs on another replica (two NOTIFYs
    each way: admit, then the outcome written back), in µs per call."""
    from gateway.proxy.cluster import ClusterLedger

    async def measure() -> dict[str, float]:
        a, b = ClusterLedger.anonymous(), ClusterLedger.anonymous()
        a.join(url, "a" * 16)
        b.join(url, "b" * 16)
        await a.start()
        await b.start()
        try:
            local, remote = [], []
            for _ in range(calls):
                entry = a.issue("pmem-bench")
                assert entry is not None
                started = time.perf_counter()
                slot = await a.admit(entry.nonce, "pmem-bench")
                assert slot is not None
                await a.record(slot)
                local.append((time.perf_counter() - started) * 1e6)
                started = time.perf_counter()
                slot = await b.admit(entry.nonce, "pmem-bench")
                assert slot is not None
                await b.record(slot, status=429, reason="rate-limited")
                remote.append((time.perf_counter() - started) * 1e6)
                assert a.release(entry).failures == 1
        finally:
            await a.stop()
            await b.stop()
            a.close()
            b.close()
        return {
            "local_p50_us": round(statistics.median(local), 1),
            "other_replica_p50_us": round(statistics.median(remote), 1),
            "other_replica_p90_us": round(sorted(remote)[int(calls * 0.9)], 1),
            "calls": calls,
        }

    return asyncio.run(measure())
