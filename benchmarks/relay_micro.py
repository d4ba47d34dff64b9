"""What a *bound* relay call costs on top of the default-LLM path that `relay` measures.

    python -m benchmarks --only relay      # after the relay's wrk figures
    python -m benchmarks.relay_micro       # alone

In-process, on an idle event loop, in µs of wall time per call (min / median / max over
the repetitions):

- the proxy's side of the ledger: `issue` a nonce for a forwarded request and `release` it;
- the relay's side: parse the `baggage` header, `find` the nonce in the ledger (any
  worker's segment), count the call in its slot;
- the target: `Relay.target(instance_id)` (registry record from the in-process cache, the
  decrypted key, the `Target`) against `Relay.target(None)` (the default LLM), and the
  per-instance usage count the relay adds.

Their sum is the bound call's extra CPU; the default path's cost is in the relay rows.

And what a call with a key the worker has not relayed before pays: the relay hands each key
in use to the log redaction (`remember_secret`), measured with 10, 1 000 and 4 000 keys
already known, with the cost of redacting one log line (issue 12.2: no update or scan that
grows with the number of keys).
"""

from __future__ import annotations

import asyncio
import gc
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.context import Context, Spread, Table
from gateway.instances.model import InstanceConfig
from gateway.instances.registry import Registry
from gateway.observe.known import KnownSecrets
from gateway.proxy.baggage import baggage_header, gateway_members
from gateway.proxy.ledger import Ledger
from gateway.relay.client import ProviderPool
from gateway.relay.relay import Relay
from gateway.settings import Settings

__all__ = ["measure", "run"]

CALLS = 50_000
KNOWN_KEYS = (10, 1_000, 4_000)
RELAY_TOKEN = "pgr-micro-token-0123456789"


def _sync(calls: int, fn: Callable[[int], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    for n in range(calls):
        fn(n)
    return (time.perf_counter() - start) / calls * 1e6


async def _async(calls: int, fn: Callable[[int], Awaitable[Any]]) -> float:
    gc.collect()
    start = time.perf_counter()
    for n in range(calls):
        await fn(n)
    return (time.perf_counter() - start) / calls * 1e6


async def _measure(home: Path, reps: int, calls: int) -> dict[str, list[float]]:
    settings = Settings(
        data_dir=home / "gateway",
        instances_file=home / "instances.yaml",
        env_file=home / "powermem.env",
        upstream="http://127.0.0.1:9",
    )
    registry = await Registry.open(settings)
    pool = ProviderPool(timeout=10, retries=0)
    try:
        config = InstanceConfig.parse(
            provider="openai", model="m", api_key="sk-bench-micro-0123456789abcdef"
        )
        record, _ = await registry.resolve(config)
        instance_id = record.instance_id
        default = InstanceConfig.parse(
            provider="openai", model="d", api_key="sk-bench-default-0123456789abcdef"
        )
        relay = Relay(token=RELAY_TOKEN, registry=registry, pool=pool, default=default)
        ledger = Ledger.anonymous()
        entry = ledger.issue(instance_id)
        assert entry is not None
        header = baggage_header(instance_id, entry.nonce)

        def issue_release(n: int) -> None:
            taken = ledger.issue(instance_id)
            assert taken is not None
            ledger.release(taken)

        def relay_side(n: int) -> None:
            found_id, nonce = gateway_members([header])
            assert nonce is not None
            slot = ledger.find(nonce, found_id)
            assert slot is not None
            ledger.record_call(slot)

        def count(n: int) -> None:
            registry.count(instance_id, relay_calls=1, relay_errors=0, prompt_tokens=10)

        await relay.target(instance_id)  # fill the caches, as the first call would
        figures: dict[str, list[float]] = {
            "ledger issue + release (proxy, per forwarded request)": [],
            "baggage parse + ledger find + record_call (relay, per call)": [],
            "Relay.target(instance) (registry hit + key + Target)": [],
            "Relay.target(None) (default LLM)": [],
            "registry.count (per bound call)": [],
        }
        names = list(figures)
        for _ in range(reps):
            figures[names[0]].append(_sync(calls, issue_release))
            figures[names[1]].append(_sync(calls, relay_side))
            figures[names[2]].append(await _async(calls, lambda n: relay.target(instance_id)))
            figures[names[3]].append(await _async(calls, lambda n: relay.target(None)))
            figures[names[4]].append(_sync(calls, count))
        ledger.release(entry)
        ledger.close()
        return figures
    finally:
        await pool.close()
        await registry.close()


def measure(reps: int = 3, calls: int = CALLS, work: Path | None = None) -> dict[str, Spread]:
    with tempfile.TemporaryDirectory(prefix="pmgw-relay-micro-", dir=work) as tmp:
        figures = asyncio.run(_measure(Path(tmp), reps, calls))
    out = {name: Spread.of(values) for name, values in figures.items()}
    return {k: v for k, v in out.items() if v is not None}


def known_keys(known: int, reps: int) -> tuple[Spread | None, Spread | None]:
    """(ms to remember one new key, µs to redact one log line) with `known` keys remembered
    already, in a fresh table (not the benchmark process's own)."""
    added, scanned = [], []
    line = "relay call for pmem-5f0c2a9e81d3b746 failed: the provider answered 401 " * 3
    rng = random.Random(known)
    for _ in range(reps):
        secrets = KnownSecrets(lambda value: "[redacted]")
        # Random endings, as real keys have (the table files a key under its last characters).
        for _ in range(known):
            secrets.add(f"sk-proj-{rng.getrandbits(160):040x}")
        start = time.perf_counter()
        secrets.add(f"sk-proj-{rng.getrandbits(160):040x}")
        added.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        for _ in range(1000):
            secrets.replace(line)
        scanned.append((time.perf_counter() - start) * 1e3)  # ms per 1 000 = µs per line
    return Spread.of(added), Spread.of(scanned)


def run(ctx: Context) -> None:
    print("  relay micro-benchmarks (in-process)", flush=True)
    calls = CALLS // 10 if ctx.quick else CALLS
    spreads = measure(ctx.reps, calls, ctx.work)
    table = Table("Bound relay call: the extra work, in-process (µs per call)", ("step", "µs"))
    for name, spread in spreads.items():
        table.add(name, spread.text("{:.2f}"))
    names = list(spreads)
    extra = (
        spreads[names[1]].mid
        + spreads[names[2]].mid
        - spreads[names[3]].mid
        + spreads[names[4]].mid
    )
    table.notes.append(
        f"a bound relay call costs about {extra:.1f} µs more than a default-LLM call "
        "(relay side + target difference + usage count, medians); the proxy adds "
        f"{spreads[names[0]].mid:.1f} µs per forwarded request for its nonce"
    )
    ctx.tables.append(table)
    ctx.extra["relay_bound_extra_us"] = {k: v.as_dict() for k, v in spreads.items()}
    for line in table.rows:
        print(f"    {line[0]:<62} {line[1]}")
    keys = Table(
        "Keys in use, masked in every log line (gateway.observe.known): a new key, and one line",
        ("keys already known", "ms to remember one more", "µs to redact one log line"),
    )
    for known in KNOWN_KEYS:
        added, scanned = known_keys(known, ctx.reps)
        if added is not None and scanned is not None:
            keys.add(f"{known:,}", added.text("{:.3f}"), scanned.text("{:.1f}"))
            ctx.extra.setdefault("known_keys", {})[str(known)] = {
                "remember_ms": added.as_dict(),
                "redact_line_us": scanned.as_dict(),
            }
    for row in keys.rows:
        print(
            f"    {row[0]:>6} keys known: remember one more {row[1]} ms, redact a line {row[2]} µs"
        )
    ctx.tables.append(keys)


if __name__ == "__main__":
    for name, spread in measure().items():
        print(f"{name:<62} {spread.text('{:.2f}')} µs")
