"""Runs the embedded MongoDB-compatible server (PyPI ``secantusdb``) as a separate process.

Used by ``sidecar demo`` and by the test suite when no real ``mongod`` is given. Started without
``--standalone`` it is a one-node replica set with a real oplog. Without a port given, it listens on
the port it had the last time it used the same data directory (remembered next to it, in
``<data dir>.port``) while that port is free, so a URI printed once stays good across restarts.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError


class EmbeddedServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (connections of a stopped server in TIME_WAIT do not count: the
    server binds with SO_REUSEADDR, as this check does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def remembered_port(path: Path) -> int:
    """The port in ``path`` while it is free, else a new free one, written there for the next start."""
    try:
        port = int(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        port = 0
    if 0 < port < 65536 and port_is_free(port):
        return port
    port = free_port()
    path.write_text(f"{port}\n", encoding="utf-8")
    return port


def _server_command() -> list[str]:
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(exe).exists():
        raise EmbeddedServerError(
            "the embedded server is not installed: pip install 'mongo-backup-sidecar[embedded]'"
        )
    return [exe]


@dataclass
class EmbeddedServer:
    data_dir: Path
    port: int = 0
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    pid_file: Path | None = None  # written as soon as the process exists (who started it can end it)
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 60.0) -> EmbeddedServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or remembered_port(self.data_dir.with_name(self.data_dir.name + ".port"))
        log_path = self.log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        where = ["--host", "127.0.0.1", "--port", str(self.port), "--storage-path", str(self.data_dir)]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*_server_command(), *where, "--log-level", "WARNING", *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self.process.pid}\n", encoding="utf-8")
        self._wait_ready(timeout, log_path)
        return self

    def _wait_ready(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"embedded server exited with {self.process.returncode}; see {log_path}"
                )
            try:
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except PyMongoError:
                time.sleep(0.2)
        self.stop()
        raise EmbeddedServerError(f"embedded server did not answer within {timeout:.0f}s; see {log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
