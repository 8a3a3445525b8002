"""Runs the embedded MongoDB-compatible server (PyPI ``secantusdb``) as a separate process.

Used by ``sidecar demo`` and by the test suite when no real ``mongod`` is given. Started without
``--standalone`` it is a one-node replica set with a real oplog.
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
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 60.0) -> EmbeddedServer:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *_server_command(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--storage-path",
                    str(self.data_dir),
                    "--log-level",
                    "WARNING",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
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
