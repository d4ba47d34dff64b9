"""A powermem-server whose web server runs but whose memory service could not be built.

What the stock server does without a usable `.env` (its default storage needs a package that
is not installed): `/api/v1/system/health` answers 200, every memory call 503. Started by a
managed gateway in place of `powermem-server` (`powermem_command`), with the same flags:

    python brokenpowermem.py --host 127.0.0.1 --port N --no-open-browser
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def health(request: web.Request) -> web.Response:
    return web.json_response({"success": True, "data": {"status": "healthy"}})


async def broken(request: web.Request) -> web.Response:
    error = {"code": "SERVICE_UNAVAILABLE", "message": "Memory service is not initialized"}
    return web.json_response({"success": False, "error": error}, status=503)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-open-browser", action="store_true")
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/api/v1/system/health", health)
    app.router.add_route("*", "/{tail:.*}", broken)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
