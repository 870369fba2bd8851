"""The port check before serving: a listener holds a port, a connection closed a moment ago does not."""

from __future__ import annotations

import errno
import socket

import pytest

from runtime.cli._ports import PortInUse, hold_ports, in_use
from runtime.config import Settings


def test_a_listening_port_is_in_use_and_one_left_in_time_wait_is_not() -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert in_use("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    assert not in_use("127.0.0.1", port), "a restarted server may bind it again, so the check must not refuse"
    assert not in_use("127.0.0.1", 0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_held_port_is_never_handed_out_yet_the_server_still_binds_it() -> None:
    """`modrpc up` starts workers before its gateway listens: the ports they get from the system
    must not be the gateway's, while the gateway's own server (SO_REUSEADDR) still binds it."""
    port = _free_port()
    settings = Settings(gateway_port=port, admin_port=0)
    with hold_ports("up", settings):
        plain = socket.socket()  # no SO_REUSEADDR, as the system's own choice of a port checks
        with pytest.raises(OSError) as refused:
            plain.bind(("127.0.0.1", port))
        plain.close()
        assert refused.value.errno == errno.EADDRINUSE
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = server.accept()
        for sock in (client, served, server):
            sock.close()
    released = socket.socket()
    released.bind(("127.0.0.1", port))
    released.close()


def test_a_port_with_a_listener_is_refused_naming_its_setting() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    admin = _free_port()
    with pytest.raises(PortInUse, match=rf"127.0.0.1:{port} is already in use; it is the gateway port"):
        hold_ports("gateway", Settings(gateway_port=port, admin_port=admin))
    with pytest.raises(PortInUse, match="admin_port"):
        hold_ports("up", Settings(gateway_port=admin, admin_port=port))
    after = socket.socket()  # the gateway port held before the refusal was let go
    after.bind(("127.0.0.1", admin))
    after.close()
    listener.close()
