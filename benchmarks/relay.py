"""Relay: a chat completion through the gateway's /relay/v1 vs straight to a fast fake provider.

The relay honours an instance only for the nonce of a request in flight (see
gateway/proxy/ledger.py), which wrk cannot have; so the calls here take the default-LLM
path: no baggage, served by an external-mode gateway (`--upstream` set) with the `.env`'s
LLM, which points at the fake. Everything else a relayed call does (token check, body
checks, provider call on pooled connections, pass-through or Anthropic translation, key
scrubbing, metrics, access line) is the same; what a bound call adds (ledger lookup,
registry record, decrypted key) is measured in-process by `relay_micro`.
"""

from __future__ import annotations

import json

from benchmarks import relay_micro
from benchmarks.context import Context
from benchmarks.fake_providers import anthropic_request, chat_request
from benchmarks.profile import profile
from benchmarks.servers import RELAY_TOKEN, Gateway, start_fake_providers, start_gateway
from benchmarks.wrk import Load

__all__ = ["run"]

CONNECTIONS = (1, 16)
PROVIDER_KEY = "sk-bench-provider-0123456789abcdef"
LABELS = {"openai": "OpenAI pass-through", "anthropic": "Anthropic translation"}


def _load(ctx: Context, name: str, path: str, body: dict[str, object], **headers: str) -> Load:
    body_file = ctx.work / f"relay-{name}.json"
    body_file.write_text(json.dumps(body))
    return Load(
        method="POST",
        path=path,
        headers={"Content-Type": "application/json", **headers},
        body_file=body_file,
    )


def _gateway(ctx: Context, provider: str, fake_url: str) -> Gateway:
    if provider == "openai":
        llm = {"OPENAI_LLM_BASE_URL": fake_url + "/v1"}
    else:
        llm = {"ANTHROPIC_LLM_BASE_URL": fake_url}
    env = {"LLM_PROVIDER": provider, "LLM_API_KEY": PROVIDER_KEY, "LLM_MODEL": "bench-model"}
    return start_gateway(
        f"relay-{provider}", ctx.work, ctx.upstream_url, workers=1, env_file={**env, **llm}
    )


def _direct_load(ctx: Context, provider: str, stream: bool) -> Load:
    name = f"{provider}-{'stream' if stream else 'plain'}-direct"
    if provider == "openai":
        auth = {"Authorization": f"Bearer {PROVIDER_KEY}"}
        return _load(ctx, name, "/v1/chat/completions", chat_request(stream=stream), **auth)
    return _load(
        ctx, name, "/v1/messages", anthropic_request(stream=stream), **{"x-api-key": PROVIDER_KEY}
    )


def run(ctx: Context) -> None:
    fake, fake_url, _ = start_fake_providers(ctx.work)
    gateways: dict[str, Gateway] = {}
    try:
        for provider in LABELS:
            gateways[provider] = _gateway(ctx, provider, fake_url)
        cases = []
        for provider in LABELS:
            for stream in (False, True):
                kind = "streaming" if stream else "plain"
                relay_load = _load(
                    ctx,
                    f"{provider}-{kind}-relay",
                    "/relay/v1/chat/completions",
                    chat_request(stream=stream),
                    Authorization=f"Bearer {RELAY_TOKEN}",
                )
                case = f"chat completion, {LABELS[provider]}, {kind}"
                cases.append((case, provider, _direct_load(ctx, provider, stream), relay_load))
        fake_tree = fake.tree()
        for rep in range(ctx.reps):
            for case, provider, direct_load, relay_load in cases:
                gateway = gateways[provider]
                for conns in CONNECTIONS:
                    direct = ctx.wrk(fake_url, direct_load, conns, rep=rep, tree=fake_tree)
                    measured = ctx.wrk(
                        gateway.url, relay_load, conns, rep=rep, tree=gateway.gateway_tree()
                    )
                    ctx.add("relay", case, conns, "gateway relay, 1 worker", direct, measured)
        openai_plain = cases[0]
        profile(
            ctx, "relay-openai", gateways["openai"].pid, gateways["openai"].url, openai_plain[3], 16
        )
        anthropic_stream = cases[3]
        profile(
            ctx,
            "relay-anthropic-stream",
            gateways["anthropic"].pid,
            gateways["anthropic"].url,
            anthropic_stream[3],
            16,
        )
        _targets(ctx)
    finally:
        for proc in (*gateways.values(), fake):
            proc.stop()
    relay_micro.run(ctx)


def _targets(ctx: Context) -> None:
    for row in ctx.rows:
        if row.family != "relay":
            continue
        if row.connections == 1:
            added = row.added_p50
            ctx.target(
                f"relay added p50, {row.case.removeprefix('chat completion, ')}, c=1",
                "<= 0.3 ms",
                added,
                added is not None and added.mid <= 0.3,
                "{:+.3f} ms",
            )
        cpu = row.cpu_us
        ctx.target(
            f"relay CPU per call, {row.case.removeprefix('chat completion, ')}, "
            f"c={row.connections}",
            "<= 300 µs",
            cpu,
            cpu is not None and cpu.mid <= 300,
            "{:.0f} µs",
        )
