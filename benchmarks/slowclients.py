"""Slow clients: thousands of connections that send a request head one byte at a time.

    python -m benchmarks.slowclients --port 8848 --connections 2000 --seconds 10

Connections come from several loopback addresses (127.0.0.2, .3, …), at most `--per-source`
each, so the gateway's per-address connection cap does not simply refuse them all: it has
to hold them and cut them when their head takes too long. A connection the gateway closes
is opened again at once. Prints one JSON line: connections opened, cut by the gateway, and
the most held open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass

__all__ = ["main"]

HEAD = b"GET /api/v1/memories?user_id=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"y" * 200


@dataclass
class Stats:
    opened: int = 0
    cut: int = 0
    failed: int = 0
    open_now: int = 0
    most_open: int = 0


async def _client(port: int, source: str, stats: Stats, until: float, interval: float) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            stats.failed += 1
            await asyncio.sleep(0.5)
            continue
        stats.opened += 1
        stats.open_now += 1
        stats.most_open = max(stats.most_open, stats.open_now)
        try:
            for byte in HEAD:
                if time.monotonic() >= until or reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    # Anything read (an error answer) or EOF means the gateway cut us.
                    await asyncio.wait_for(reader.read(4096), interval)
                    break
                except TimeoutError:
                    continue
            else:
                await asyncio.sleep(max(0.0, until - time.monotonic()))
        except OSError:
            pass
        finally:
            if time.monotonic() < until:
                stats.cut += 1
            stats.open_now -= 1
            writer.close()


async def _run(args: argparse.Namespace) -> Stats:
    stats = Stats()
    until = time.monotonic() + args.seconds
    sources = [f"127.0.0.{2 + n // args.per_source}" for n in range(args.connections)]
    tasks = []
    for n, source in enumerate(sources):
        tasks.append(asyncio.create_task(_client(args.port, source, stats, until, args.interval)))
        if n % 100 == 99:
            await asyncio.sleep(0.05)  # a ramp of about a second per 2 000 connections
    await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--per-source", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bytes")
    args = parser.parse_args()
    stats = asyncio.run(_run(args))
    print(
        json.dumps(
            {
                "opened": stats.opened,
                "cut_by_gateway": stats.cut,
                "connect_failures": stats.failed,
                "most_open": stats.most_open,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
