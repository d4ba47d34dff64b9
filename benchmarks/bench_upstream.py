"""A tiny powermem stand-in that calls the gateway's relay like powermem does.

    python -m benchmarks.bench_upstream --port 9001 --relay http://127.0.0.1:8848 --token T

Every request gets powermem's small JSON envelope. A `POST /api/v1/memories` that carries
the gateway's baggage first makes one chat completion through the gateway's relay
(`/relay/v1/chat/completions`) with that same `baggage` header and the relay token, as the
instrumented powermem-server would: so each bound request spends its instance at its own
provider origin. Used by the `flood` family (1 000+ provider origins).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

__all__ = ["make_app"]

BODY = b'{"success":true,"data":{"results":[]},"message":"ok"}'
CHAT = json.dumps(
    {
        "model": "gateway-relay",
        "messages": [
            {"role": "system", "content": "Extract facts as JSON."},
            {"role": "user", "content": "I like tea."},
        ],
        "response_format": {"type": "json_object"},
    }
).encode()
SESSION = web.AppKey("session", aiohttp.ClientSession)


def make_app(relay: str, token: str) -> web.Application:
    app = web.Application()
    url = relay.rstrip("/") + "/relay/v1/chat/completions"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def session(app: web.Application) -> AsyncIterator[None]:
        # Few connections: the relay's caller is one address, like a real powermem.
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as client:
            app[SESSION] = client
            yield

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        baggage = request.headers.get("baggage", "")
        status = 200
        if request.method == "POST" and request.path == "/api/v1/memories" and baggage:
            async with app[SESSION].post(
                url, data=CHAT, headers={**headers, "baggage": baggage}
            ) as answer:
                await answer.read()
                status = 200 if answer.status == 200 else 502
        return web.Response(body=BODY, status=status, content_type="application/json")

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--relay", required=True, help="the gateway's URL")
    parser.add_argument("--token", required=True, help="the relay token")
    args = parser.parse_args()
    app = make_app(args.relay, args.token)
    try:
        import uvloop
    except ImportError:
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
        return
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
