"""Every performance figure of issues 14 and 12 in one command, each against a direct call.

    python -m benchmarks [--reps 3] [--seconds 3] [--warmup 1] [--only proxy,relay]
                         [--quick] [--no-profile] [--out DIR]

Runs the gateway (`powermem-gateway serve`), nginx, the stock powermem-server and fake LLM
providers as separate processes, with wrk as the load generator (about 17 minutes on two
cores; --quick about 3). Each repetition measures
the direct call and what goes through the gateway back to back; tables show the median with
(min–max) over the repetitions. Writes results.json, results.md (the README's table) and,
with py-spy installed, profile.txt (the hot paths of the proxy and the relay) to
benchmarks/results/<time>/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from benchmarks import flood, lookup, powermem, proxy, relay, replicas, scale, workers
from benchmarks.context import Context
from benchmarks.nginx import start_upstream
from benchmarks.procs import free_port, machine_busy_seconds, require_tools
from benchmarks.profile import combined
from benchmarks.report import text, write

FAMILIES: dict[str, Callable[[Context], None]] = {
    "proxy": proxy.run,
    "relay": relay.run,
    "powermem": powermem.run,
    "scale": scale.run,
    "lookup": lookup.run,
    "workers": workers.run,
    "flood": flood.run,
    "replicas": replicas.run,
}
# Run only when named: it needs the team extra (psycopg) and PostgreSQL's server package,
# and adds about 12 minutes.
ON_REQUEST = {"replicas"}
RESULTS = Path(__file__).with_name("results")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--reps", type=int, help="repetitions of every figure [3; quick: 1]")
    parser.add_argument("--seconds", type=float, help="measured seconds per run [3; quick: 1]")
    parser.add_argument("--warmup", type=float, help="warm-up seconds, first repetition [1]")
    parser.add_argument(
        "--only",
        default=",".join(f for f in FAMILIES if f not in ON_REQUEST),
        help=f"families, comma-separated [all but {','.join(sorted(ON_REQUEST))}]",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 repetition, short runs, small sizes"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--out", type=Path, help="results folder [benchmarks/results/<time>]")
    args = parser.parse_args()
    families = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    args.families = families
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (1.0 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 1.0)
    if args.reps < 1 or args.seconds < 1:
        parser.error("--reps and --seconds must be at least 1")
    return args


def _background(seconds: float = 2.0) -> float:
    """Busy cores of the machine while the benchmark runs nothing: everyone else's load."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return round((machine_busy_seconds() - before) / seconds, 2)


def main() -> None:
    args = _arguments()
    require_tools()
    out = args.out or RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    profile = not args.no_profile and shutil.which("py-spy") is not None
    if not args.no_profile and not profile:
        print("py-spy is not installed: no profiles (pip install py-spy)")
    started = time.monotonic()
    load_before = os.getloadavg()
    background = [_background()]
    print(
        f"busy cores before the run (other people's work): {background[0]:.2f} of {os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory(prefix="pmgw-bench-") as tmp:
        work = Path(tmp)
        port = free_port()
        upstream = start_upstream(work / "nginx-upstream", port)
        ctx = Context(
            work=work,
            seconds=args.seconds,
            warmup=args.warmup,
            reps=args.reps,
            quick=args.quick,
            upstream_url=f"http://127.0.0.1:{port}",
            upstream_pid=upstream.pid,
            profile=profile,
            out=out,
        )
        try:
            for name in args.families:
                print(f"== {name}", flush=True)
                began = time.monotonic()
                FAMILIES[name](ctx)
                ctx.extra.setdefault("family_seconds", {})[name] = round(
                    time.monotonic() - began, 1
                )
        finally:
            upstream.stop()
    background.append(_background())
    ctx.extra["background_busy_cores"] = {"before": background[0], "after": background[1]}
    ctx.targets.notes.append(
        f"machine: {os.cpu_count()} cores; busy with other work before the run "
        f"{background[0]:.2f} cores, after {background[1]:.2f}; load average "
        f"{load_before[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    )
    elapsed = round(time.monotonic() - started, 1)
    print()
    print(text(ctx))
    settings = {
        "reps": args.reps,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "quick": args.quick,
        "families": args.families,
        "elapsed": elapsed,
        "load_average_at_start": [round(x, 2) for x in load_before],
    }
    write(ctx, out, settings)
    profiles = combined(ctx)
    if profiles is not None:
        print(f"\nprofiles: {profiles}")
    print(f"\n{len(ctx.rows)} rows in {elapsed}s; results in {out}")


if __name__ == "__main__":
    main()
