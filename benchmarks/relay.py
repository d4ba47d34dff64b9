"""Relay: a chat completion through /relay/v1 vs straight to a local fake provider."""

from __future__ import annotations

import json

from benchmarks.context import Context, Row, post_json
from benchmarks.fake_providers import anthropic_request, chat_request
from benchmarks.servers import RELAY_TOKEN, start_fake_providers, start_gateway
from benchmarks.wrk import Load

__all__ = ["run"]

CONNECTIONS = (1, 16)


def _load(ctx: Context, name: str, path: str, body: dict[str, object], **headers: str) -> Load:
    body_file = ctx.work / f"relay-{name}.json"
    body_file.write_text(json.dumps(body))
    return Load(
        method="POST",
        path=path,
        headers={"Content-Type": "application/json", **headers},
        body_file=body_file,
    )


def run(ctx: Context) -> None:
    fakes, fake_url = start_fake_providers(ctx.work)
    gateway = start_gateway("gateway-relay", ctx.work, ctx.upstream_url)
    try:
        ids = {}
        for provider, base_url in (("openai", fake_url + "/v1"), ("anthropic", fake_url)):
            answer = post_json(
                gateway.url + "/api/v1/instances",
                {
                    "provider": provider,
                    "model": "bench-model",
                    "api_key": f"sk-bench-{provider}-0123456789",
                    "base_url": base_url,
                },
            )
            ids[provider] = answer["data"]["instance_id"]
        peak = 0.0
        for provider in ("openai", "anthropic"):
            for stream in (False, True):
                kind = "streaming" if stream else "plain"
                name = f"{provider}-{kind}"
                label = "OpenAI pass-through" if provider == "openai" else "Anthropic translation"
                if provider == "openai":
                    direct_load = _load(
                        ctx,
                        name + "-direct",
                        "/v1/chat/completions",
                        chat_request(stream=stream),
                        Authorization="Bearer sk-bench-openai-0123456789",
                    )
                else:
                    direct_load = _load(
                        ctx,
                        name + "-direct",
                        "/v1/messages",
                        anthropic_request(stream=stream),
                        **{"x-api-key": "sk-bench-anthropic-0123456789"},
                    )
                relay_load = _load(
                    ctx,
                    name + "-relay",
                    "/relay/v1/chat/completions",
                    chat_request(stream=stream),
                    Authorization=f"Bearer {RELAY_TOKEN}",
                    baggage=f"powermem.instance={ids[provider]}",
                )
                for conns in CONNECTIONS:
                    direct = ctx.wrk(fake_url, direct_load, conns)
                    measured = ctx.wrk(gateway.url, relay_load, conns, rss_pid=gateway.pid)
                    peak = max(peak, measured.peak_rss_mb or 0.0)
                    ctx.add(Row("relay", f"{label}, {kind}", conns, "gateway", direct, measured))
        ctx.memory_mb["gateway peak under relay load (16 conns)"] = peak
    finally:
        gateway.stop()
        fakes.stop()
