"""Implicit registration: what the first request of a new configuration costs, and a repeat."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.context import SMALL_GET, Context, Row, post_json
from benchmarks.servers import start_gateway

__all__ = ["LLM_HEADERS", "run"]

CONNECTIONS = (1, 16)
LLM_HEADERS = {
    "X-PowerMem-LLM-Provider": "openai",
    "X-PowerMem-LLM-Model": "gpt-4o-mini",
    "X-PowerMem-LLM-Api-Key": "sk-bench-repeat-0123456789abcdef",
    "X-PowerMem-Client": "bench",
}


def run(ctx: Context) -> None:
    gateway = start_gateway("gateway-implicit", ctx.work, ctx.upstream_url)
    try:
        registered = post_json(
            gateway.url + "/api/v1/instances",
            {"provider": "openai", "model": "gpt-4o-mini", "api_key": "sk-bench-id-0123456789"},
        )
        instance_id = registered["data"]["instance_id"]
        cases = {
            # Every request carries a configuration never seen before: derive, encrypt, commit.
            "implicit create (new LLM headers)": replace(
                SMALL_GET, headers=LLM_HEADERS, mode="unique"
            ),
            "implicit repeat (same LLM headers)": replace(SMALL_GET, headers=LLM_HEADERS),
            "explicit X-PowerMem-Instance": replace(
                SMALL_GET, headers={"X-PowerMem-Instance": instance_id}
            ),
        }
        for case, load in cases.items():
            for conns in CONNECTIONS:
                direct = ctx.direct("small GET", SMALL_GET, conns)
                measured = ctx.wrk(gateway.url, load, conns, rss_pid=gateway.pid)
                ctx.add(Row("registration", case, conns, "gateway", direct, measured))
    finally:
        gateway.stop()
