"""The admin page at scale: how long `/gateway/ui` takes with 10, 10 000 and 100 000 instances.

    python -m benchmarks.ui [--sizes 10,10000,100000] [--repeat 30]

A real `powermem-gateway serve` process (one worker, seeded data dir as in the scale family)
in front of a stand-in powermem that answers every call with 200, so the wiring panel's
health and readiness checks succeed. A logged-in client then asks, one at a time: the first
page (50 rows, the default), a page of 200, a page deep in the list (the cursor of the
100th-last instance) and a filtered page. Each figure is the median and the 95th percentile
of `--repeat` calls, the whole answer read, after a warm-up call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp

from benchmarks.seed import seed
from benchmarks.servers import start_gateway
from gateway.instances.paging import Cursor, encode_cursor
from gateway.instances.sqlite_store import DB_FILE

__all__ = ["main", "measure"]


class _Powermem(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"success": true, "data": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _deep_cursor(data_dir: Path, back: int = 100) -> str:
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        count = db.execute("SELECT count(*) FROM instances").fetchone()[0]
        row = db.execute(
            "SELECT created_at, instance_id FROM instances ORDER BY created_at, instance_id "
            "LIMIT 1 OFFSET ?",
            (max(0, count - back - 1),),
        ).fetchone()
    finally:
        db.close()
    return encode_cursor(Cursor(stored=(row[0], row[1])))


async def _timed(session: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, float]:
    async def once() -> float:
        start = time.perf_counter()
        async with session.get(url, allow_redirects=False) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        return (time.perf_counter() - start) * 1000

    await once()
    samples = sorted([await once() for _ in range(repeat)])
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


async def _measure_gateway(base: str, token: str, cursor: str, repeat: int) -> dict[str, object]:
    pages = {
        "first page (50 rows)": "/gateway/ui",
        "page of 200 rows": "/gateway/ui?limit=200",
        "deep page (100 rows)": f"/gateway/ui?limit=100&cursor={cursor}",
        "filtered (provider, 50)": "/gateway/ui?provider=openai",
    }
    jar = aiohttp.CookieJar(unsafe=True)  # the gateway is addressed by IP
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.post(
            base + "/gateway/ui/login", data={"token": token}, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()
        results: dict[str, object] = {}
        for name, path in pages.items():
            median, p95 = await _timed(session, base + path, repeat)
            results[name] = {"median_ms": round(median, 1), "p95_ms": round(p95, 1)}
        return results


def measure(count: int, work: Path, upstream: str, repeat: int) -> dict[str, object]:
    home = work / f"ui-{count}"
    data_dir = home / "gateway"
    seed(data_dir, home / "instances.yaml", count)
    gateway = start_gateway(f"gateway-ui-{count}", work, upstream, data_dir=data_dir)
    try:
        token = (data_dir / "admin.token").read_text().strip()
        return asyncio.run(_measure_gateway(gateway.url, token, _deep_cursor(data_dir), repeat))
    finally:
        gateway.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,10000,100000")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    powermem = ThreadingHTTPServer(("127.0.0.1", 0), _Powermem)
    threading.Thread(target=powermem.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{powermem.server_address[1]}"
    results: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="pmgw-ui-bench-") as tmp:
            for count in (int(s) for s in args.sizes.split(",") if s.strip()):
                print(f"== {count} instances", flush=True)
                results[str(count)] = measure(count, Path(tmp), upstream, args.repeat)
                print(json.dumps(results[str(count)], indent=2), flush=True)
    finally:
        powermem.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
