"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from sidecar.config import Settings, load_settings
from sidecar.embedded import EmbeddedServer
from sidecar.logs import LogTail, Redactor


def settings_for(mongo_uri: str, directory: Path, **values: object) -> Settings:
    """Settings for a backup dir under ``directory``; keyword arguments override SIDECAR_* by attribute."""
    env = {
        "SIDECAR_MONGODB_URI": mongo_uri,
        "SIDECAR_BACKUP_DIR": str(directory / "backups"),
        "SIDECAR_LOG_DIR": str(directory / "logs"),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_CONNECT_TIMEOUT_SECONDS": "5",
        "SIDECAR_PITR": "off",  # the oplog archiver runs in the tests that ask for it (pitr="auto")
    }
    env.update({f"SIDECAR_{k.upper()}": str(v) for k, v in values.items()})
    return load_settings(env)


def discard(server: EmbeddedServer) -> None:
    """End a test's embedded server whose data is thrown away. SIGKILL: on SIGTERM the server waits 2 s
    for its accept thread, blocked in an accept() that closing the socket does not wake."""
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``sidecar ARGS`` in a child process, on ``settings``' server, directories and connect timeout
    (no archiver)."""
    env = {
        **os.environ,
        "SIDECAR_MONGODB_URI": settings.mongodb_uri,
        "SIDECAR_BACKUP_DIR": str(settings.backup_dir),
        "SIDECAR_LOG_DIR": str(settings.log_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_CONNECT_TIMEOUT_SECONDS": str(settings.connect_timeout_seconds),
        "SIDECAR_TIMEZONE": settings.timezone,
        "SIDECAR_PITR": "off",
    }
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def job_log() -> Iterator[LogTail]:
    """The sidecar's records while the block runs, as ``GET /api/v1/monitoring/logs`` shows them."""
    tail, logger = LogTail(Redactor()), logging.getLogger("sidecar")
    level = logger.level
    logger.addHandler(tail)
    logger.setLevel(logging.INFO)
    try:
        yield tail
    finally:
        logger.removeHandler(tail)
        logger.setLevel(level)
