"""The listening socket, bound before anything else starts, and who holds a taken port.

Binding first means a second gateway (or powermem's own server on 8848) is found out in
milliseconds, before any powermem is started on the same database. SO_REUSEADDR lets a
restart reuse a port still in TIME_WAIT.

With several workers each gets a socket of its own in one SO_REUSEPORT group, so the kernel
spreads new connections evenly over them (one shared socket lets a burst of keep-alive
connections land on whichever worker wakes first). The port is first bound plainly, without
SO_REUSEPORT, and released: that bind fails for anyone already listening, a reuseport group of
another process included, so a second gateway never joins ours. The supervisor keeps every
socket of the group open, so connections the kernel routes to a crashed worker's socket wait
in its backlog for the respawned worker instead of being refused.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from gateway.process.errors import ServeError

__all__ = ["BACKLOG", "bind_listener", "bind_listeners", "port_holder"]

BACKLOG = 1024
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == _LISTEN
                and int(fields[1].split(":")[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of a process listening on `port`, if this user may see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue  # gone, or another user's
        if links & wanted:
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                raw = b""
            command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            return int(entry.name), command[:120] or "?"
    return None


def _taken(host: str, port: int) -> ServeError:
    holder = port_holder(port)
    if holder is None:
        who = "by a process this user cannot see"
    else:
        pid, command = holder
        who = f"by pid {pid} ({command})"
    hint = (
        " powermem's own server (for example the one its Claude Code plugin starts) uses 8848 too:"
        if holder and "powermem" in holder[1] and "gateway" not in holder[1]
        else ""
    )
    return ServeError(
        f"Port {port} on {host} is already in use {who}.{hint} Stop that process, or start "
        f"the gateway on another port with --port (POWERMEM_GATEWAY_PORT)."
    )


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), or `ServeError` naming who holds the port."""
    return bind_listeners(host, port, 1)[0]


def bind_listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on (host, port): one plain socket, or a reuseport group."""
    if count == 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [_bind(host, port, reuse_port=False)]
    probe = _bind(host, port, reuse_port=False, listen=False)  # refused if anyone listens
    port = probe.getsockname()[1]  # --port 0: every socket of the group on the chosen one
    probe.close()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(_bind(host, port, reuse_port=True))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ServeError(f"Cannot listen on {host!r}: {exc.strerror}; check --host.") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _taken(host, port) from None
        if exc.errno == errno.EACCES:
            raise ServeError(
                f"Not allowed to listen on {host}:{port} ({exc.strerror}); ports below 1024 "
                "need privileges: pick another with --port."
            ) from None
        raise ServeError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
    sock.setblocking(False)
    return sock
