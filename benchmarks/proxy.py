"""Proxy: nginx answering directly vs the gateway (1 and 2 workers) vs nginx as a proxy.

Small GET and 4 KB POST at 1 and 16 connections, plus requests bound to an instance (by
`X-PowerMem-Instance`, by LLM headers, by scoped URL) at one connection. CPU per request is
the gateway's whole process tree (supervisor and workers: utime + stime from /proc over the
measured seconds) divided by the requests wrk completed.
"""

from __future__ import annotations

import json
from dataclasses import replace

from benchmarks.context import SMALL_GET, Context, post_json
from benchmarks.nginx import start_proxy
from benchmarks.procs import ProcessTree, free_port
from benchmarks.profile import profile
from benchmarks.servers import start_gateway
from benchmarks.wrk import Load

__all__ = ["BOUND_BY_ID", "LLM_HEADERS", "W1", "W2", "post_load", "run"]

CONNECTIONS = (1, 16)
W1, W2, NGINX = "gateway, 1 worker", "gateway, 2 workers", "nginx as proxy"
BOUND_BY_ID = "small GET bound by X-PowerMem-Instance"
PACED_CASE = "small GET, one every 10 ms"
PACED = replace(SMALL_GET, delay_ms=10)
LLM_HEADERS = {
    "X-PowerMem-LLM-Provider": "openai",
    "X-PowerMem-LLM-Model": "gpt-4o-mini",
    "X-PowerMem-LLM-Api-Key": "sk-bench-headers-0123456789abcdef",
    "X-PowerMem-Client": "bench",
}


def post_load(ctx: Context) -> Load:
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


def register(url: str, key: str) -> str:
    answer = post_json(
        url + "/api/v1/instances",
        {"client": "bench", "provider": "openai", "model": "gpt-4o-mini", "api_key": key},
    )
    instance_id: str = answer["data"]["instance_id"]
    return instance_id


def _bound_loads(instance_id: str) -> dict[str, Load]:
    path = SMALL_GET.path
    return {
        BOUND_BY_ID: replace(SMALL_GET, headers={"X-PowerMem-Instance": instance_id}),
        "small GET bound by LLM headers": replace(SMALL_GET, headers=LLM_HEADERS),
        "small GET bound by scoped URL /i/<id>/": replace(
            SMALL_GET, path=f"/i/{instance_id}{path}"
        ),
    }


def run(ctx: Context) -> None:
    w1 = start_gateway("proxy-w1", ctx.work, ctx.upstream_url, workers=1)
    w2 = start_gateway("proxy-w2", ctx.work, ctx.upstream_url, workers=2)
    nginx_port = free_port()
    nginx = start_proxy(ctx.work / "nginx-proxy", nginx_port, ctx.upstream_port)
    try:
        vias = {
            W1: (w1.url, w1.gateway_tree()),
            W2: (w2.url, w2.gateway_tree()),
            NGINX: (f"http://127.0.0.1:{nginx_port}", nginx.tree()),
        }
        bound = _bound_loads(register(w1.url, "sk-bench-by-id-0123456789abcdef"))
        upstream = ProcessTree(ctx.upstream_pid) if ctx.upstream_pid else None
        shapes = {"small GET": SMALL_GET, "4 KB POST": post_load(ctx)}
        for rep in range(ctx.reps):
            for shape, load in shapes.items():
                for conns in CONNECTIONS:
                    direct = ctx.wrk(ctx.upstream_url, load, conns, rep=rep, tree=upstream)
                    # Two workers cannot help one connection: measured at 16 only.
                    got = {
                        via: ctx.wrk(url, load, conns, rep=rep, tree=tree)
                        for via, (url, tree) in vias.items()
                        if via != W2 or conns > 1
                    }
                    for via, measured in got.items():
                        ctx.add("proxy", shape, conns, via, direct, measured, nginx=got[NGINX])
            direct = ctx.row("proxy", "small GET", 1, W1).samples[-1].direct
            for case, load in bound.items():
                measured = ctx.wrk(w1.url, load, 1, rep=rep, tree=vias[W1][1])
                ctx.add("proxy", case, 1, W1, direct, measured)
            # At the pace powermem works (tens of requests a second) every process sleeps
            # between requests, and waking up costs more than the request: shown for both.
            direct = ctx.wrk(ctx.upstream_url, PACED, 1, rep=rep, tree=upstream)
            for via in (W1, NGINX):
                url, tree = vias[via]
                ctx.add(
                    "proxy", PACED_CASE, 1, via, direct, ctx.wrk(url, PACED, 1, rep=rep, tree=tree)
                )
        profile(ctx, "proxy-plain", w1.pid, w1.url, SMALL_GET, 16)
        profile(ctx, "proxy-bound-by-id", w1.pid, w1.url, bound[BOUND_BY_ID], 16)
        _targets(ctx)
    finally:
        for proc in (w1, w2, nginx):
            proc.stop()


def _targets(ctx: Context) -> None:
    for via in (W1, NGINX):
        row = ctx.find("proxy", PACED_CASE, 1, via)
        if row is not None:
            ctx.target(
                f"proxy added p50 at one request every 10 ms, {via} (context for G1)",
                "(context)",
                row.added_p50,
                None,
                "{:+.3f} ms",
            )
            ctx.target(
                f"proxy CPU per request at one request every 10 ms, {via} (context for G1)",
                "(context)",
                row.cpu_us,
                None,
                "{:.0f} µs",
            )
    for conns in CONNECTIONS:
        row = ctx.find("proxy", "small GET", conns, W1)
        if row is not None:
            cpu = row.cpu_us
            ctx.target(
                f"proxy CPU per request, plain small GET, 1 worker, c={conns}",
                "<= 150 µs",
                cpu,
                cpu is not None and cpu.mid <= 150,
                "{:.0f} µs",
            )
    for row in ctx.rows:
        if row.family == "proxy" and row.case.startswith("small GET bound"):
            cpu = row.cpu_us
            ctx.target(
                f"proxy CPU per request, {row.case.removeprefix('small GET ')}, c=1",
                "<= 180 µs",
                cpu,
                cpu is not None and cpu.mid <= 180,
                "{:.0f} µs",
            )
    for shape in ("small GET", "4 KB POST"):
        row = ctx.find("proxy", shape, 1, W1)
        if row is not None:
            added = row.added_p50
            ctx.target(
                f"proxy added p50, {shape}, 1 worker, c=1",
                "<= 0.15 ms",
                added,
                added is not None and added.mid <= 0.15,
                "{:+.3f} ms",
            )
        for via in (W1, W2):
            row = ctx.find("proxy", shape, 16, via)
            if row is not None:
                ratio = row.ratio_to("nginx")
                ctx.target(
                    f"proxy throughput vs nginx as proxy, {shape}, {via}, c=16",
                    ">= 0.5x",
                    ratio,
                    ratio is not None and ratio.mid >= 0.5,
                    "{:.2f}x",
                )
