"""The whole benchmark suite in one command; every figure a ratio against a direct call.

    python -m benchmarks [--seconds 4] [--warmup 1] [--only proxy,relay] [--out DIR]

Runs the gateway (`powermem-gateway serve --upstream …`), nginx and fake LLM providers as
separate processes and wrk as the load generator, prints one table, and writes
results.json, results.md and plot.png to benchmarks/results/<timestamp>/.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from benchmarks import implicit, lookup, proxy, relay, replicas, scale
from benchmarks.context import Context
from benchmarks.nginx import start_upstream
from benchmarks.procs import free_port, require_tools
from benchmarks.report import table, write

FAMILIES: dict[str, Callable[[Context], None]] = {
    "proxy": proxy.run,
    "registration": implicit.run,
    "relay": relay.run,
    "scale": scale.run,
    "lookup": lookup.run,
    "replicas": replicas.run,
}
RESULTS = Path(__file__).with_name("results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4, help="measured seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="discarded seconds before each run")
    parser.add_argument("--only", default=",".join(FAMILIES), help="families, comma-separated")
    parser.add_argument("--out", type=Path, help="results folder [benchmarks/results/<time>]")
    args = parser.parse_args()
    families = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    require_tools()
    out = args.out or RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        upstream = start_upstream(work / "nginx-upstream", port)
        ctx = Context(work, args.seconds, args.warmup, f"http://127.0.0.1:{port}")
        try:
            for name in families:
                print(f"== {name}", flush=True)
                FAMILIES[name](ctx)
        finally:
            upstream.stop()
    elapsed = round(time.monotonic() - started, 1)
    print()
    print(table(ctx))
    write(
        ctx,
        out,
        {"seconds": args.seconds, "warmup": args.warmup, "families": families, "elapsed": elapsed},
    )
    print(f"\n{len(ctx.rows)} figures in {elapsed}s; results in {out}")


if __name__ == "__main__":
    main()
