"""nginx, twice: the fast upstream ("direct") and the reverse proxy used as industry reference.

Each instance gets a generated nginx.conf in its own prefix directory (pid, logs and temp
files live there), runs in the foreground (`daemon off`) and needs no root.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.procs import Proc, tool

__all__ = ["UPSTREAM_BODY", "start_proxy", "start_upstream"]

# What powermem's envelope looks like for a small answer.
UPSTREAM_BODY = '{"success":true,"data":{"results":[]},"message":"ok"}'

_COMMON = """
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 16m;
{body}
}}
"""

_UPSTREAM = """
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{answer}'; }}
    }}
"""

_PROXY = """
    upstream powermem {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://powermem;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


def _start(name: str, prefix: Path, port: int, body: str) -> Proc:
    prefix.mkdir(parents=True, exist_ok=True)
    # As root, nginx workers would switch to `nobody`; keep them as the current user.
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(_COMMON.format(prefix=prefix, user=user, body=body))
    proc = Proc(
        name,
        [tool("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        prefix,
    )
    proc.wait_http(f"http://127.0.0.1:{port}/")
    return proc


def start_upstream(prefix: Path, port: int) -> Proc:
    """A static JSON answer to any method and path: the fastest upstream this machine has."""
    return _start("nginx-upstream", prefix, port, _UPSTREAM.format(port=port, answer=UPSTREAM_BODY))


def start_proxy(prefix: Path, port: int, upstream_port: int) -> Proc:
    """nginx as a reverse proxy with pooled keep-alive connections to the upstream."""
    return _start(
        "nginx-proxy", prefix, port, _PROXY.format(port=port, upstream_port=upstream_port)
    )
