"""The archiver as real processes: ``sidecar pitr stream`` killed with SIGKILL and stopped with SIGTERM
under a continuous write load loses and doubles no entry; ``sidecar serve`` runs the archiver and its
SIGTERM stores the slice it holds."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pymongo

from sidecar.embedded import free_port
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from tests.helpers import settings_for
from tests.pitr_support import (
    archive_span,
    archived,
    background_writes,
    server_entries,
    wait_for_slices,
    wait_until_stored,
)
from tests.test_api_sigterm import Serve, call

SIDECAR = str(Path(sys.executable).with_name("sidecar"))


def stream_env(uri: str, tmp: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
        "SIDECAR_MONGODB_URI": uri,
        "SIDECAR_BACKUP_DIR": str(tmp / "backups"),
        "SIDECAR_LOG_DIR": str(tmp / "logs"),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_PITR_SLICE_SECONDS": "0.3",
    }


def start_stream(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    with open(log, "ab") as out:
        command = [SIDECAR, "pitr", "stream", *args]
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_no_entry_is_lost_or_doubled_across_sigkill_and_sigterm_of_pitr_stream(own_server, tmp_path):
    client = pymongo.MongoClient(own_server.uri)
    settings = settings_for(own_server.uri, tmp_path, pitr="auto")
    env, log = stream_env(own_server.uri, tmp_path), tmp_path / "stream.log"
    stop = threading.Event()
    writer = background_writes(client, stop)
    try:
        process = start_stream(env, log)
        wait_for_slices(settings, 3)
        process.kill()  # SIGKILL: whatever it held in memory is gone, the oplog still has it
        assert process.wait(10) == -signal.SIGKILL
        time.sleep(0.5)
        count = len(SliceCatalog(oplog_dir(settings)).slices())
        process = start_stream(env, log)
        wait_for_slices(settings, count + 3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()
        count = len(SliceCatalog(oplog_dir(settings)).slices())
        process = start_stream(env, log)
        wait_for_slices(settings, count + 2)
    finally:
        stop.set()
        writer.join(10)
    wait_until_stored(settings, client)
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0, log.read_text()

    after, last = archive_span(settings)
    stored = archived(settings)
    expected = server_entries(client, after, last)
    assert len(stored) == len(set(stored)) == len(expected)  # nothing doubled, nothing lost
    assert stored == expected  # and byte for byte, in order
    assert not [p for p in oplog_dir(settings).iterdir() if p.name.endswith(".partial")]

    shown = subprocess.run(
        [SIDECAR, "pitr", "status", "--json"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    status = json.loads(shown.stdout)
    assert status["gaps"] == [] and status["slices"]["entries"] == len(stored)
    assert status["slices"]["last"] == {"t": last.time, "i": last.inc}
    text = subprocess.run([SIDECAR, "pitr", "status"], env=env, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0 and "slices:" in text.stdout and "GAP" not in text.stdout


def test_sidecar_serve_archives_and_its_sigterm_stores_the_slice_it_holds(own_server, tmp_path):
    client = pymongo.MongoClient(own_server.uri)
    serve = Serve(tmp_path, own_server.uri, grace=10)  # default SIDECAR_PITR=auto, 60 s slices
    settings = settings_for(own_server.uri, tmp_path, pitr="auto")
    try:
        deadline = time.monotonic() + 30
        while not ((body := call(serve.port, "GET", "/api/backup/pitr")[1])["archiver"] or {}).get("running"):
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        client.clinic.patients.insert_many([{"n": n} for n in range(50)])
        newest = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]
        time.sleep(1.5)  # the tail has given out everything and waited once: the slice is complete
        assert not SliceCatalog(oplog_dir(settings)).slices()  # held in memory, the slice is not due
        status, body = call(serve.port, "GET", "/api/backup/pitr?verify=true")
        assert status == 200 and body["slices"]["checked"] == "content" and body["serverOplog"]["last"]
        assert call(serve.port, "GET", "/api/backup/pitr?verify=maybe")[0] == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{serve.port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'mongobackup_pitr_slices_total{result="ok"} 0.0' in metrics
        assert "mongobackup_oplog_window_seconds" in metrics
    finally:
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(30) == 0, serve.out.read_text()
    slices = SliceCatalog(oplog_dir(settings)).slices()
    assert len(slices) == 1 and slices[0]["last"] == {"t": newest.time, "i": newest.inc}
    after, last = archive_span(settings)
    assert archived(settings) == server_entries(client, after, last)
    assert slices[0]["namespaces"] == {"clinic.patients": 50}


def test_pitr_stream_metrics_port_asks_for_the_token_and_refuses_a_busy_port(own_server, tmp_path):
    """With SIDECAR_METRICS_REQUIRE_TOKEN, /metrics of `pitr stream` answers 401 (JSON, the token never
    echoed) without the read token and 200 with it; other paths are 404. A port already taken is one
    error line naming the address, exit 2, before anything is archived."""
    read = secrets.token_urlsafe(16)
    env = {
        **stream_env(own_server.uri, tmp_path),
        "SIDECAR_READ_TOKEN": read,
        "SIDECAR_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "SIDECAR_METRICS_REQUIRE_TOKEN": "true",
    }
    port = free_port()
    log = tmp_path / "stream.log"
    process = start_stream(env, log, "--metrics-port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while (status := fetch(f"{url}/metrics", read)[0]) != 200:
            assert time.monotonic() < deadline and process.poll() is None, (status, log.read_text())
            time.sleep(0.2)
        status, body = fetch(f"{url}/metrics", read)
        assert status == 200 and "mongobackup_pitr_caught_up_timestamp_seconds" in body
        assert "mongobackup_alert_threshold_pitr_rpo_seconds 300.0" in body
        assert "mongobackup_alert_threshold_backup_age_seconds" not in body  # no backup rule may match
        for token in (None, "wrong" + read):
            status, body = fetch(f"{url}/metrics", token)
            assert status == 401 and json.loads(body)["error"] == "unauthorized" and read not in body
        assert fetch(f"{url}/", read)[0] == 404

        busy = subprocess.run(
            [SIDECAR, "pitr", "stream", "--metrics-port", str(port)],
            env={**env, "SIDECAR_BACKUP_DIR": str(tmp_path / "other")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode == 2, busy.stderr
        (line,) = busy.stderr.splitlines()
        assert line.startswith(f"sidecar: error: --metrics-port: cannot listen on 127.0.0.1:{port}: "), line
        assert not (tmp_path / "other" / "oplog").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()


def fetch(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
