"""Median added latency of the proxy and the relay, against direct calls, in one run.

    python -m benchmarks.latency [--requests 2000]

Starts, in this process: a small upstream (stands in for powermem), a fake OpenAI provider
and a fake Anthropic provider, and the gateway in front of them; then times sequential
requests direct and through the gateway, interleaved so both see the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import Settings

TOKEN = "pgr-benchmark-token"


async def _upstream_app() -> web.Application:
    async def small(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"success": True, "data": {"ok": 1}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", small)
    return app


async def _provider_app() -> web.Application:
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "{}"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(reply)

    async def messages(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(message)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    return app


async def _time(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> float:
    start = time.perf_counter()
    async with session.request(method, url, **kw) as response:
        await response.read()
        assert response.status < 400, (response.status, await response.text())
    return time.perf_counter() - start


async def run(requests: int) -> dict[str, Any]:
    upstream = TestServer(await _upstream_app(), host="127.0.0.1")
    provider = TestServer(await _provider_app(), host="127.0.0.1")
    await upstream.start_server()
    await provider.start_server()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            instances_file=Path(tmp) / "instances.yaml",
            env_file=Path(tmp) / "none.env",
            upstream=str(upstream.make_url("")).rstrip("/"),
            relay_token=TOKEN,
        )
        gateway = TestServer(create_app(settings), host="127.0.0.1")
        await gateway.start_server()
        provider_url = str(provider.make_url("/v1"))
        results: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            ids = {}
            for name, prov in (("openai", "openai"), ("anthropic", "anthropic")):
                async with session.post(
                    gateway.make_url("/api/v1/instances"),
                    json={
                        "provider": prov,
                        "model": "m",
                        "api_key": f"sk-bench-{name}-0123456789",
                        "base_url": provider_url
                        if prov == "openai"
                        else str(provider.make_url("")),
                    },
                ) as r:
                    ids[name] = (await r.json())["data"]["instance_id"]
            llm = {
                "X-PowerMem-LLM-Provider": "openai",
                "X-PowerMem-LLM-Model": "m",
                "X-PowerMem-LLM-Api-Key": "sk-bench-headers-0123456789",
            }
            chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
            relay_headers = {"Authorization": f"Bearer {TOKEN}"}
            cases = {
                "proxy GET (no instance)": (
                    ("GET", str(upstream.make_url("/api/v1/memories?user_id=u")), {}),
                    ("GET", str(gateway.make_url("/api/v1/memories?user_id=u")), {}),
                ),
                "proxy GET (instance id)": (
                    ("GET", str(upstream.make_url("/api/v1/memories")), {}),
                    (
                        "GET",
                        str(gateway.make_url("/api/v1/memories")),
                        {"headers": {"X-PowerMem-Instance": ids["openai"]}},
                    ),
                ),
                "proxy GET (LLM headers)": (
                    ("GET", str(upstream.make_url("/api/v1/memories")), {}),
                    ("GET", str(gateway.make_url("/api/v1/memories")), {"headers": llm}),
                ),
                "proxy POST 4 KB": (
                    ("POST", str(upstream.make_url("/api/v1/memories")), {"data": b"x" * 4096}),
                    ("POST", str(gateway.make_url("/api/v1/memories")), {"data": b"x" * 4096}),
                ),
                "relay openai pass-through": (
                    ("POST", provider_url + "/chat/completions", {"json": chat}),
                    (
                        "POST",
                        str(gateway.make_url("/relay/v1/chat/completions")),
                        {
                            "json": chat,
                            "headers": {
                                **relay_headers,
                                "baggage": f"powermem.instance={ids['openai']}",
                            },
                        },
                    ),
                ),
                "relay anthropic translation": (
                    ("POST", str(provider.make_url("/v1/messages")), {"json": chat}),
                    (
                        "POST",
                        str(gateway.make_url("/relay/v1/chat/completions")),
                        {
                            "json": chat,
                            "headers": {
                                **relay_headers,
                                "baggage": f"powermem.instance={ids['anthropic']}",
                            },
                        },
                    ),
                ),
            }
            for name, (direct, via) in cases.items():
                d: list[float] = []
                g: list[float] = []
                for _ in range(50):  # warm-up: connections, caches
                    await _time(session, direct[0], direct[1], **direct[2])
                    await _time(session, via[0], via[1], **via[2])
                for _ in range(requests):
                    d.append(await _time(session, direct[0], direct[1], **direct[2]))
                    g.append(await _time(session, via[0], via[1], **via[2]))
                md, mg = statistics.median(d), statistics.median(g)
                results[name] = {
                    "direct_ms": round(md * 1000, 3),
                    "gateway_ms": round(mg * 1000, 3),
                    "added_ms": round((mg - md) * 1000, 3),
                    "ratio": round(mg / md, 2),
                }
        await gateway.close()
    await upstream.close()
    await provider.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    results = asyncio.run(run(args.requests))
    width = max(map(len, results))
    print(f"{'case':<{width}}  direct ms  gateway ms  added ms  ratio")
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['direct_ms']:>9.3f}  {r['gateway_ms']:>10.3f}  "
            f"{r['added_ms']:>8.3f}  {r['ratio']:>5.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
