"""Real PostgreSQL and Redis servers for the tests, started under throw-away directories.

Both run as a non-root user: PostgreSQL refuses to run as root, and the tests run as root here
and in CI. When we are root the servers run as the `postgres` system user (Debian's
postgresql package creates it) through `setpriv`; otherwise as ourselves. Missing server
binaries fail the tests that need them with a message saying what to install: these tests
are never skipped silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "RedisServer", "service_user"]

SERVICE_USER = "postgres"
_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_user() -> pwd.struct_passwd | None:
    """The user servers run as (None: ourselves, since we are not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pytest.fail(
            f"The tests run as root and PostgreSQL refuses to: they start it as the "
            f"'{SERVICE_USER}' system user, which does not exist. Install Debian's postgresql "
            "package (apt-get install -y postgresql), which creates it."
        )


def _as_service(command: list[str]) -> list[str]:
    user = service_user()
    if user is None:
        return command
    # setpriv execs the server itself (no helper process between us and it, so signals and
    # `kill -9` reach the server).
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
        "--",
        *command,
    ]


def _private_dir(prefix: str) -> Path:
    """A fresh directory the service user owns (pytest's tmp dirs are root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    user = service_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(
            f"PostgreSQL's {name} was not found (PATH or /usr/lib/postgresql/*/bin): install "
            "Debian's postgresql package (apt-get install -y postgresql); .ci/run does."
        )
    return found


class PostgresServer:
    """One PostgreSQL cluster on a loopback port; `restart()` for the outage tests."""

    def __init__(self) -> None:
        self.root = _private_dir("pmgw-pg-")
        self.data = self.root / "data"
        self.port = _free_port()
        self.log = self.root / "server.log"
        subprocess.run(
            _as_service(
                [
                    _postgres_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "gateway",
                    "--auth=trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
        )
        conf = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            # Throw-away data: durability costs time here and proves nothing.
            "fsync = off\nfull_page_writes = off\nmax_connections = 300\n"
        )
        with (self.data / "postgresql.conf").open("a") as file:
            file.write(conf)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://gateway@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_service(
                [_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
            ),
            check=True,
            capture_output=True,
            timeout=_START_TIMEOUT + 5,
        )

    def start(self) -> None:
        self._ctl("-w", "-t", str(int(_START_TIMEOUT)), "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """One Redis on a loopback port, no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server was not found: install Debian's redis-server package "
                "(apt-get install -y redis-server); .ci/run does."
            )
        self.root = _private_dir("pmgw-redis-")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            _as_service(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.root),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
