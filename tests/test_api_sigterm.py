"""`sidecar serve` as a real process: SIGTERM during a backup.

Within the grace period the backup finishes and is catalogued; past it the backup is cancelled, its
entry marked failed, its partial file removed, and no archive exists under a final name for it. The
backup reads through a proxy that holds the dump's stream after its first megabyte
(tests/holding_proxy.py): the signal always lands while the dump runs, and the test releases the
stream when the step it checks has happened (the refusal of new jobs; the cancel after the grace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pymongo
import pytest

from sidecar.embedded import EmbeddedServer, free_port
from sidecar.sampledata import load_bulk_data
from sidecar.store.catalog import Catalog
from tests.helpers import discard
from tests.holding_proxy import HoldingProxy, holding_proxy

ADMIN = "admin-token-for-sigterm-000001"
SIDECAR = str(Path(sys.executable).with_name("sidecar"))


def call(port: int, method: str, path: str, token: str | None = ADMIN) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


class Serve:
    def __init__(self, tmp: Path, uri: str, grace: float, **settings: str):
        self.port = free_port()
        self.backups, self.out = tmp / "backups", tmp / f"serve-{self.port}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
            "SIDECAR_MONGODB_URI": uri,
            "SIDECAR_BACKUP_DIR": str(self.backups),
            "SIDECAR_LOG_DIR": str(tmp / "logs"),
            "SIDECAR_ADMIN_TOKEN": ADMIN,
            "SIDECAR_PORT": str(self.port),
            "SIDECAR_MIN_FREE_BYTES": "0",
            "SIDECAR_SCHEDULE": "off",
            "SIDECAR_VERIFY_AFTER_BACKUP": "off",
            "SIDECAR_SHUTDOWN_GRACE_SECONDS": str(grace),
            **{f"SIDECAR_{name.upper()}": value for name, value in settings.items()},
        }
        with open(self.out, "wb") as out:
            self.process = subprocess.Popen([SIDECAR, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.out.read_text()
            try:
                if call(self.port, "GET", "/health", None)[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "sidecar serve did not come up"
            time.sleep(0.1)

    def start_held_backup(self, proxy: HoldingProxy) -> dict[str, Any]:
        """Start a backup and return its job once the proxy holds its dump stream."""
        status, body = call(self.port, "POST", "/api/backup/create")
        assert status == 202, body
        assert proxy.holding.wait(60), "the dump never read a megabyte"
        job = call(self.port, "GET", f"/api/backup/jobs/{body['job']['id']}")[1]["job"]
        assert job["state"] == "running", job
        return job

    def wait_for_log(self, text: str) -> None:
        deadline = time.monotonic() + 30
        while not any(text in r["message"] for r in self.log()):
            assert time.monotonic() < deadline and self.process.poll() is None, self.out.read_text()
            time.sleep(0.05)

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]


def assert_catalog_consistent(backups: Path) -> list[dict[str, Any]]:
    entries = json.loads((backups / "backup-info.json").read_text())
    assert all(e["status"] in ("completed", "failed") for e in entries)
    assert not list(backups.glob("*.partial")) and not list(backups.glob(".*.partial"))
    assert Catalog(backups).reconcile("maekcord-backup").clean
    for entry in entries:
        assert (backups / entry["fileName"]).exists() == (entry["status"] == "completed")
    return entries


@pytest.fixture
def bulk_server(tmp_path: Path) -> Any:
    server = EmbeddedServer(tmp_path / "bulk-mongo").start()
    try:
        with pymongo.MongoClient(server.uri) as client:
            load_bulk_data(client, target_bytes=8_000_000)  # 2 MB a collection: past the proxy's hold
        yield server
    finally:
        discard(server)


@pytest.mark.slow
def test_sigterm_during_a_backup(tmp_path: Path, bulk_server: EmbeddedServer) -> None:
    # 1. A long grace period: the running backup finishes, new jobs are refused meanwhile.
    with holding_proxy(bulk_server.port, pass_bytes=1_000_000) as proxy:
        serve = Serve(tmp_path, proxy.uri(), grace=120)
        job = serve.start_held_backup(proxy)
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_for_log("shutdown: waiting up to 120s")
        assert call(serve.port, "GET", "/health", None)[1]["status"] == "stopping"
        status, body = call(serve.port, "POST", "/api/backup/create")
        assert status == 503 and body["error"]["code"] == "shutting_down"
        proxy.release()
        assert serve.process.wait(120) == 0
    (entry,) = assert_catalog_consistent(serve.backups)
    assert entry["status"] == "completed" and entry["jobId"] == job["id"]

    # 2. A short grace period: the backup is cancelled cleanly.
    with holding_proxy(bulk_server.port, pass_bytes=1_000_000) as proxy:
        serve = Serve(tmp_path, proxy.uri(), grace=0.5)
        job = serve.start_held_backup(proxy)
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_for_log("grace period over, cancelling")
        assert serve.process.poll() is None  # the job still holds it: the cancel waits for the job
        proxy.release()  # the dump reads on, sees the cancel and stops
        assert serve.process.wait(60) == 0
    first, second = assert_catalog_consistent(serve.backups)
    assert first["status"] == "completed"
    assert second["jobId"] == job["id"] and second["status"] == "failed"
    assert "cancelled" in second["error"] and not (serve.backups / second["fileName"]).exists()
    assert any(f"backup job {job['id']} failed" in r["message"] for r in serve.log())
