"""The registry behind bound requests: SQLite vs PostgreSQL, cached vs read-through (issue 13).

    python -m benchmarks --only replicas

For 10, 10 000 and 100 000 instances (--quick: 10 and 1 000), the same gateway serves a
small GET bound by a random `X-PowerMem-Instance` — from 100 instances in use (a team's
working set: after the warm-up, cache hits) and from all of them (mostly first sightings:
reads of the store) — with its registry in

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

from benchmarks.context import SMALL_GET, Context, Table
from benchmarks.postgres import Postgres
from benchmarks.scale import seeded, sizes
from benchmarks.seed import rows_for
from benchmarks.servers import RELAY_TOKEN, Gateway, start_gateway
from benchmarks.wrk import Load
from gateway.instances.registry import Registry
from gateway.instances.store import Row as StoredRow
from gateway.settings import Settings

__all__ = ["run"]

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
                env_file=Path(tmp) / "powermem.env",
                upstream="http://127.0.0.1:9",
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


def _gateway(ctx: Context, name: str, home: Path, url: str, cached: bool) -> Gateway:
    return start_gateway(
        name,
        ctx.work,
        ctx.upstream_url,
        data_dir=home / name,
        extra=("--database-url", url, "--registry-cache" if cached else "--no-registry-cache"),
        environ={"POWERMEM_GATEWAY_SECRET": SECRET},
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
                env_file=home / "powermem.env",
                upstream="http://127.0.0.1:9",
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


def run(ctx: Context) -> None:
    postgres = Postgres()
    try:
        counts = sizes(ctx)
        for count in counts:
            home = ctx.work / f"replicas-{count}"
            home.mkdir()
            sqlite_home, sqlite_ids = seeded(ctx, count)  # shared with the scale family
            started = time.perf_counter()
            # Each registry derives ids with its own key: one list of ids per kind.
            url = postgres.create(f"bench_{count}")
            ids = {"sqlite": sqlite_ids, "postgresql": _seed_postgres(url, count)}
            ctx.extra.setdefault("replicas_seed_seconds", {})[str(count)] = round(
                time.perf_counter() - started, 1
            )
            for variant in VARIANTS:
                kind = variant.split(",")[0]
                if variant == "sqlite":
                    gateway = start_gateway(
                        f"replicas-sqlite-{count}",
                        ctx.work,
                        ctx.upstream_url,
                        data_dir=sqlite_home / "gateway",
                    )
                else:
                    cached = variant.endswith("cached")
                    name = f"pg-{count}-{'cached' if cached else 'read-through'}"
                    gateway = _gateway(ctx, name, home, url, cached)
                try:
                    _measure(ctx, gateway, variant, _loads(home, kind, ids[kind], count))
                finally:
                    gateway.stop()
            if count == counts[-1]:
                _cluster(ctx, url, ids["postgresql"], home, count)
    finally:
        postgres.stop()


def _cluster(ctx: Context, url: str, ids: list[str], home: Path, count: int) -> None:
    """The two costs only several replicas have, as one table of results.md."""
    table = Table(
        f"PostgreSQL registry with {count:,} instances: what several replicas cost",
        ("figure", "p50", "p90", "max / calls"),
    )
    waits = ctx.extra["invalidation"] = _invalidation(ctx, url, ids, home)
    table.add(
        "update committed → 2 other replicas and the writer confirmed dropping the record",
        f"{waits['p50_ms']:.2f} ms",
        f"{waits['p90_ms']:.2f} ms",
        f"{waits['max_ms']:.2f} ms over {waits['updates']} updates",
    )
    nonce = ctx.extra["relay_nonce_check"] = _ledger(url)
    table.add(
        "relay nonce check, issued by this replica",
        f"{nonce['local_p50_us']:.0f} µs",
        "–",
        f"{nonce['calls']} calls",
    )
    table.add(
        "relay nonce check, issued by another replica (NOTIFY both ways)",
        f"{nonce['other_replica_p50_us']:.0f} µs",
        f"{nonce['other_replica_p90_us']:.0f} µs",
        f"{nonce['calls']} calls",
    )
    ctx.tables.append(table)
    print(f"  {waits}\n  {nonce}", flush=True)


def _loads(home: Path, kind: str, ids: list[str], count: int) -> dict[str, Load]:
    """The working set of a team (the first HOT ids), and every instance."""
    loads: dict[str, Load] = {}
    for name, chosen in (
        (f"{min(count, HOT)} in use of {count:,}", ids[:HOT]),
        (f"all {count:,} in use", ids),
    ):
        if count <= HOT and loads:
            break  # with 10 instances both are the same
        ids_file = home / f"ids-{kind}-{len(chosen)}.txt"
        ids_file.write_text("\n".join(chosen) + "\n")
        loads[name] = replace(SMALL_GET, mode="ids", ids_file=ids_file)
    return loads


def _measure(ctx: Context, gateway: Gateway, variant: str, loads: dict[str, Load]) -> None:
    tree = gateway.gateway_tree()
    for rep in range(ctx.reps):
        for conns in CONNECTIONS:
            direct = ctx.wrk(ctx.upstream_url, SMALL_GET, conns, rep=rep)
            for name, load in loads.items():
                measured = ctx.wrk(gateway.url, load, conns, rep=rep, tree=tree)
                ctx.add("replicas", f"bound by id, {name}", conns, variant, direct, measured)


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
