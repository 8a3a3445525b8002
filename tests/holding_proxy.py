"""A TCP proxy in front of a MongoDB-wire server that holds a long reply mid-stream: each connection's
first ``pass_bytes`` from the server go through, the rest waits for ``release()``. Small exchanges
(handshakes, pings, the health monitor's) never reach the limit; a dump's stream of documents does.
So a test holds a backup inside its dump stage by construction, however fast the machine is."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class HoldingProxy:
    def __init__(self, target_port: int, pass_bytes: int) -> None:
        self.target_port, self.pass_bytes = target_port, pass_bytes
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()  # a reply is held
        self.released = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]

    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> HoldingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def release(self) -> None:
        self.released.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.pass_bytes), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if limit is not None and passed + len(data) > limit and not self.released.is_set():
                    head = max(limit - passed, 0)
                    sink.sendall(data[:head])
                    self.holding.set()
                    self.released.wait()
                    data = data[head:]
                sink.sendall(data)
                passed += len(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.released.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@contextmanager
def holding_proxy(target_port: int, pass_bytes: int) -> Iterator[HoldingProxy]:
    proxy = HoldingProxy(target_port, pass_bytes).start()
    try:
        yield proxy
    finally:
        proxy.close()
