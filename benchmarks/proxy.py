"""Proxy throughput and latency: direct vs gateway vs nginx, small GET and 4 KB POST."""

from __future__ import annotations

import json
import time

from benchmarks.context import SMALL_GET, Context, Row
from benchmarks.nginx import start_proxy
from benchmarks.procs import free_port, rss_mb
from benchmarks.servers import have_uvloop, start_gateway
from benchmarks.wrk import Load

__all__ = ["CONNECTIONS", "run"]

CONNECTIONS = (1, 16, 128)


def _post_load(ctx: Context) -> Load:
    body = ctx.work / "post-4k.json"
    # A memory add of about 4 KB, as a coding tool sends after a long conversation.
    text = ("The user prefers small focused commits and typed Python. " * 80)[:3900]
    body.write_text(json.dumps({"messages": [{"role": "user", "content": text}], "user_id": "u"}))
    return Load(
        method="POST",
        path="/api/v1/memories",
        headers={"Content-Type": "application/json"},
        body_file=body,
    )


def run(ctx: Context) -> None:
    upstream_port = int(ctx.upstream_url.rsplit(":", 1)[1])
    gateway = start_gateway("gateway-proxy", ctx.work, ctx.upstream_url)
    # The same gateway on uvloop, to see whether it is worth using (see README, Performance).
    on_uvloop = (
        start_gateway("gateway-uvloop", ctx.work, ctx.upstream_url, uvloop=True)
        if have_uvloop()
        else None
    )
    if on_uvloop is None:
        print("  uvloop is not installed: no uvloop comparison (pip install uvloop)")
    nginx_port = free_port()
    nginx = start_proxy(ctx.work / "nginx-proxy", nginx_port, upstream_port)
    try:
        time.sleep(1.0)
        ctx.memory_mb["gateway idle (just started)"] = round(rss_mb(gateway.pid), 1)
        shapes = {"small GET": SMALL_GET, "4 KB POST": _post_load(ctx)}
        for name, load in shapes.items():
            for conns in CONNECTIONS:
                direct = ctx.direct(name, load, conns)
                measured = ctx.wrk(gateway.url, load, conns, rss_pid=gateway.pid)
                ctx.add(Row("proxy", name, conns, "gateway", direct, measured))
                if name == "small GET" and on_uvloop is not None:
                    other = ctx.wrk(on_uvloop.url, load, conns)
                    ctx.add(Row("proxy", name, conns, "gateway on uvloop", direct, other))
                reference = ctx.wrk(f"http://127.0.0.1:{nginx_port}", load, conns)
                ctx.add(Row("proxy", name, conns, "nginx", direct, reference))
        peaks = [r.measured.peak_rss_mb or 0.0 for r in ctx.rows if r.via == "gateway"]
        ctx.memory_mb["gateway peak under proxy load (<=128 conns)"] = max(peaks)
        ctx.memory_mb["gateway after proxy load"] = round(rss_mb(gateway.pid), 1)
    finally:
        for proc in (gateway, on_uvloop, nginx):
            if proc is not None:
                proc.stop()
