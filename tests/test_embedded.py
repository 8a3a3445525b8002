"""The embedded server keeps its port across restarts on the same data directory while it is free."""

from __future__ import annotations

import socket
from pathlib import Path

from sidecar.embedded import EmbeddedServer


def test_the_port_is_remembered_next_to_the_data_and_given_up_when_taken(tmp_path: Path) -> None:
    data = tmp_path / "mongo"
    with EmbeddedServer(data) as first:
        port = first.port
    assert (tmp_path / "mongo.port").read_text().strip() == str(port)
    with EmbeddedServer(data) as again:  # right after the stop: its connections may be in TIME_WAIT
        assert again.port == port
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with EmbeddedServer(data) as moved:
            assert moved.port != port
    assert (tmp_path / "mongo.port").read_text().strip() == str(moved.port)
