"""G1: the stock powermem-server alone vs behind the gateway, on the same machine in one run.

Three servers, each with its own SQLite file, the same embedder and the same fast fake LLM:

- `powermem alone`: `powermem-server`, its LLM pointed straight at the fake;
- `powermem + OTel`: the same under `opentelemetry-instrument`, configured exactly as the
  gateway runs it (propagators on, sampler off, nothing exported): the instrumentation's
  own cost, which belongs to the managed setup but not to the gateway's code;
- `gateway (managed)`: `powermem-gateway serve` with no --upstream, requests bound to an
  instance (`X-PowerMem-Instance`) whose provider is the fake; powermem's two LLM calls per
  memory add then go through the relay, each checked against the request's ledger nonce.

Each figure is compared to `powermem alone` measured in the same repetition. Memory add with
inference makes two LLM calls (fact extraction, then the update decision) and embeds the
fact; search embeds the query and makes no LLM call.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks.context import Context, post_json
from benchmarks.fake_providers import FACT
from benchmarks.procs import CpuMeter, Proc, clean_environ, free_port
from benchmarks.servers import start_fake_providers, start_gateway
from benchmarks.wrk import Load
from gateway.proxy.upstream_env import upstream_environment

__all__ = ["run"]

CLIENTS = (1, 4)
DIMS = 64
ALONE, OTEL, GATEWAY = "powermem alone", "powermem + OTel", "gateway (managed)"
USER = "bench-g1"
# The key powermem alone sends to the fake (the gateway's powermem sends the relay token).
DIRECT_LLM_KEY = "sk-bench-direct-llm-0123456789"


def _dotenv(root: Path, fake_v1: str) -> dict[str, str]:
    """A user's `.env`: SQLite storage, OpenAI-compatible embeddings, an LLM (all fakes)."""
    return {
        "DATABASE_PROVIDER": "sqlite",
        "SQLITE_PATH": str(root / "powermem.db"),
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_API_KEY": "sk-bench-embedder-0123456789",
        "EMBEDDING_MODEL": "fake-embedding",
        "EMBEDDING_DIMS": str(DIMS),
        "OPENAI_EMBEDDING_BASE_URL": fake_v1,
        "LLM_PROVIDER": "openai",
        "LLM_API_KEY": "sk-bench-env-llm-0123456789",
        "LLM_MODEL": "bench-model",
        "OPENAI_LLM_BASE_URL": fake_v1,
        "TELEMETRY_ENABLED": "false",
    }


def _start_alone(name: str, work: Path, fake_v1: str, *, instrumented: bool) -> tuple[Proc, str]:
    """powermem-server with the environment the gateway would give it, but its LLM at the fake."""
    root = work / name
    workdir = root / "cwd"
    workdir.mkdir(parents=True)
    (workdir / ".env").write_text("# empty: settings come from the environment\n")
    env = upstream_environment(
        _dotenv(root, fake_v1),
        relay_url=fake_v1,
        relay_token=DIRECT_LLM_KEY,
        data_dir=root,
    )
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    command = [f"{bin_dir}/powermem-server", "--host", "127.0.0.1", "--port", str(port)]
    if instrumented:
        command = [f"{bin_dir}/opentelemetry-instrument", *command]
    child_env = clean_environ(HOME=str(root), **env)
    child_env["PATH"] = f"{bin_dir}:{child_env.get('PATH', '/usr/bin:/bin')}"
    proc = Proc(name, [*command, "--no-open-browser"], work, env=child_env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/api/v1/system/health", 90, ok_only=True)
    return proc, url


ADD, SEARCH = "memory add, infer (2 LLM calls)", "memory search"
SEARCH_USER = "bench-g1-search"
SEEDED = 100  # memories the search runs look through


def _body(work: Path, name: str, body: dict[str, object]) -> Path:
    path = work / f"g1-{name}.json"
    path.write_text(json.dumps(body))
    return path


def _load(case: str, body: Path, headers: dict[str, str]) -> Load:
    path = "/api/v1/memories" if case == ADD else "/api/v1/memories/search"
    headers = {"Content-Type": "application/json", **headers}
    return Load(method="POST", path=path, headers=headers, body_file=body)


def _bodies(work: Path, rep: int, clients: int) -> dict[str, Path]:
    """This run's request bodies. Each add run writes under a user of its own: powermem
    compares a new fact with that user's memories (a full scan in SQLite), so a shared user
    would make every run slower than the one before, on each server at its own pace."""
    user = f"{USER}-r{rep}-c{clients}"
    add = {"content": f"I am {user}. {FACT}.", "user_id": user, "infer": True}
    search = {"query": "what does the user drink", "user_id": SEARCH_USER, "limit": 5}
    return {
        ADD: _body(work, f"add-{rep}-{clients}", add),
        SEARCH: _body(work, "search", search),
    }


def _seed(url: str, headers: dict[str, str], count: int) -> None:
    """The same `count` memories for the search runs, stored without inference."""
    drinks = ("green tea", "black coffee", "mint tea", "espresso", "cocoa", "lemonade")
    for n in range(count):
        text = f"Note {n}: the user drinks {drinks[n % len(drinks)]} at {n % 24:02d}:00."
        post_json(
            url + "/api/v1/memories",
            {"content": text, "user_id": SEARCH_USER, "infer": False},
            headers,
        )


def run(ctx: Context) -> None:
    fake, fake_url, _ = start_fake_providers(ctx.work, embedding_dims=DIMS)
    fake_v1 = fake_url + "/v1"
    procs: list[Proc] = [fake]
    try:
        alone, alone_url = _start_alone("g1-powermem-alone", ctx.work, fake_v1, instrumented=False)
        procs.append(alone)
        otel, otel_url = _start_alone("g1-powermem-otel", ctx.work, fake_v1, instrumented=True)
        procs.append(otel)
        gw_root = ctx.work / "g1-gateway"
        gw_root.mkdir()
        gateway = start_gateway(
            "g1-gateway",
            ctx.work,
            None,
            workers=2,
            env_file=_dotenv(gw_root, fake_v1),
            timeout=120,
        )
        procs.append(gateway)
        registered = post_json(
            gateway.url + "/api/v1/instances",
            {
                "client": "bench",
                "provider": "openai",
                "model": "bench-instance-model",
                "api_key": "sk-bench-instance-0123456789",
                "base_url": fake_v1,
            },
        )
        bound = {"X-PowerMem-Instance": registered["data"]["instance_id"]}
        # The whole server side in every case (for the gateway: itself and its powermem), so
        # the CPU figures compare like with like.
        servers = [
            (ALONE, alone_url, {}, alone.tree()),
            (OTEL, otel_url, {}, otel.tree()),
            (GATEWAY, gateway.url, bound, gateway.tree()),
        ]
        seeded = 20 if ctx.quick else SEEDED
        for _, url, headers, _ in servers:
            _seed(url, headers, seeded)
        for rep in range(ctx.reps):
            for case in (ADD, SEARCH):
                for clients in CLIENTS:
                    body = _bodies(ctx.work, rep, clients)[case]
                    got = {}
                    # A different server first in each repetition: no one always runs last.
                    for name, url, headers, tree in servers[rep % 3 :] + servers[: rep % 3]:
                        load = _load(case, body, headers)
                        own = CpuMeter(gateway.gateway_tree()) if name == GATEWAY else None
                        got[name] = ctx.wrk(url, load, clients, rep=rep, tree=tree)
                        if own is not None:
                            # The gateway's own share: supervisor and workers, not powermem.
                            cpu = own.seconds() / max(got[name].requests, 1) * 1e6
                            got["own"] = replace(got[name], cpu_us=round(cpu, 1))
                    ctx.add("powermem", case, clients, OTEL, got[ALONE], got[OTEL])
                    ctx.add(
                        "powermem",
                        case,
                        clients,
                        GATEWAY,
                        got[ALONE],
                        got[GATEWAY],
                        otel=got[OTEL],
                        own=got["own"],
                    )
        _targets(ctx)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _targets(ctx: Context) -> None:
    for row in ctx.rows:
        if row.family != "powermem" or row.via != GATEWAY:
            continue
        label = f"G1 {row.case}, {row.connections} client{'s' if row.connections > 1 else ''}"
        ratio = row.rps_ratio
        ctx.target(
            f"{label}: throughput vs powermem alone",
            ">= 0.97x",
            ratio,
            ratio is not None and ratio.mid >= 0.97,
            "{:.2f}x",
        )
        added = row.added_p50
        ctx.target(
            f"{label}: added p50",
            "<= +1 ms",
            added,
            added is not None and added.mid <= 1.0,
            "{:+.2f} ms",
        )
        own = row.spread(lambda s: s.others["own"].cpu_us if "own" in s.others else None)
        ctx.target(
            f"{label}: the gateway's own CPU per request (workers and supervisor)",
            "(context)",
            own,
            None,
            "{:.0f} µs",
        )
        share = row.ratio_to("otel")
        ctx.target(
            f"{label}: throughput vs powermem + OTel (the gateway's own share)",
            "(context)",
            share,
            None,
            "{:.2f}x",
        )
