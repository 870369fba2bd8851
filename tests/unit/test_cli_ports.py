"""The port check before serving: a listener holds a port, a connection closed a moment ago does not."""

from __future__ import annotations

import socket

from runtime.cli._ports import in_use


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
