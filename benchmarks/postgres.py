"""A throw-away PostgreSQL server for the registry benchmark (Debian's server package).

Run as the `postgres` system user when we are root (PostgreSQL refuses root), with fsync on:
the benchmark measures what a real deployment would pay for a write.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.procs import free_port

__all__ = ["Postgres"]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise SystemExit(f"PostgreSQL's {name} is needed: apt-get install -y postgresql")
    return found


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pmgw-bench-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--",
            ]
        self.port = free_port()
        data = self.root / "data"
        self._run(_binary("initdb"), "-D", str(data), "-U", "gateway", "--auth=trust", "-E", "UTF8")
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                "shared_buffers = 256MB\n"
            )
        self._ctl = [_binary("pg_ctl"), "-D", str(data), "-l", str(self.root / "log")]
        self._run(*self._ctl, "-w", "start")

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=120)

    def url(self, database: str) -> str:
        return f"postgresql://gateway@127.0.0.1:{self.port}/{database}"

    def create(self, database: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def stop(self) -> None:
        try:
            self._run(*self._ctl, "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
