"""The listening sockets: one per worker in a reuseport group, and never shared with strangers."""

from __future__ import annotations

import socket

import pytest

from gateway.process.errors import ServeError
from gateway.process.listen import bind_listeners


def test_workers_get_one_socket_each_on_one_port() -> None:
    """Two workers: two listening sockets, the same port, each accepting on its own."""
    socks = bind_listeners("127.0.0.1", 0, 2)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 2 and len(ports) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass
    finally:
        for sock in socks:
            sock.close()


def test_one_worker_gets_a_plain_socket() -> None:
    """Without workers to spread over, nothing may ever share the port."""
    [sock] = bind_listeners("127.0.0.1", 0, 1)
    try:
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        sock.close()


@pytest.mark.parametrize("theirs_reuse_port", [False, True])
def test_a_port_someone_listens_on_is_refused_even_to_a_reuseport_group(
    theirs_reuse_port: bool,
) -> None:
    """A second gateway never joins another process's listeners, reuseport group or not."""
    theirs = socket.socket()
    if theirs_reuse_port:
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    theirs.bind(("127.0.0.1", 0))
    theirs.listen()
    try:
        with pytest.raises(ServeError, match="already in use"):
            bind_listeners("127.0.0.1", theirs.getsockname()[1], 2)
    finally:
        theirs.close()
