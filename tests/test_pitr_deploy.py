"""The archiver as the deployments run it: ``sidecar pitr stream --health-file`` and its exec probe
(``sidecar pitr probe``, the CronJob-mode Deployment's liveness and readiness), one archiver per backup
directory (a second one stands by, which both probes and ``/health`` of ``sidecar serve`` report), and
SIGTERM removing the health file once the last slice is stored."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pymongo
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.logs import Redactor
from sidecar.pitr.capture.probe import health_problem, write_health
from sidecar.pitr.capture.state import PitrState
from tests.helpers import settings_for
from tests.pitr_support import wait_for_slices
from tests.test_api_sigterm import Serve, call
from tests.test_pitr_process import SIDECAR, start_stream, stream_env


def probe(env: dict[str, str], health: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SIDECAR, "pitr", "probe", "--health-file", str(health), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for_file(path: Path, key: str, value: object, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.get(key) == value:
                return body
        assert time.monotonic() < deadline, f"{path}: {key} never became {value!r}"
        time.sleep(0.1)


def test_stream_health_file_probes_and_a_second_archiver_standing_by(own_server, tmp_path):
    client = pymongo.MongoClient(own_server.uri)
    settings = settings_for(own_server.uri, tmp_path, pitr="auto")
    env = stream_env(own_server.uri, tmp_path)
    health = tmp_path / "pitr-health.json"
    first = start_stream(env, tmp_path / "stream.log", "--health-file", str(health))
    serve = None
    try:
        body = wait_for_file(health, "running", True)
        assert body["pid"] == first.pid and body["error"] is None
        client.pitrdeploy.c.insert_many([{"n": n} for n in range(10)])
        wait_for_slices(settings, 1, timeout=20)  # it archives
        live, ready = probe(env, health), probe(env, health, "--ready")
        assert (live.returncode, ready.returncode) == (0, 0), live.stderr + ready.stderr

        # A second archiver of the same directory (here the one inside `sidecar serve`) stands by,
        # and says so: /health is degraded with the holder's pid, still 200 so the pod stays up.
        serve = Serve(tmp_path, own_server.uri, grace=5, pitr_slice_seconds="0.3")
        deadline = time.monotonic() + 30
        while True:
            status, health_body = call(serve.port, "GET", "/health", None)
            reasons = [r for r in health_body["degraded"] if "oplog archiver" in r]
            if reasons:
                break
            assert time.monotonic() < deadline, health_body
            time.sleep(0.2)
        assert status == 200 and health_body["status"] == "degraded"
        assert f"another oplog archiver (pid {first.pid})" in reasons[0], reasons
        # Its RPO series would stand still while the first one archives, and page: it exports none and
        # its alerts endpoint does not judge the RPO; the archive's other series stay.
        with urllib.request.urlopen(f"http://127.0.0.1:{serve.port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert "mongobackup_pitr_gaps 0.0" in metrics
        assert "mongobackup_pitr_caught_up_timestamp_seconds" not in metrics
        assert "mongobackup_pitr_last_timestamp_seconds" not in metrics
        _, alerts = call(serve.port, "GET", "/api/v1/monitoring/alerts")
        rpo = next(a for a in alerts["alerts"] if a["name"] == "MongoBackupPitrRpoBreached")
        assert not rpo["active"] and rpo["value"] is None, rpo

        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0, (tmp_path / "stream.log").read_text()
        assert not health.exists(), "a stopped archiver must not look alive"
        gone = probe(env, health)
        assert gone.returncode == 1 and "no health file" in gone.stderr, gone.stderr
    finally:
        for process in (first, serve.process if serve else None):
            if process and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)


def test_probe_refuses_a_stale_or_not_tailing_archiver(tmp_path):
    health = tmp_path / "pitr-health.json"
    health.write_text(json.dumps({"time": time.time() - 120, "running": True}), encoding="utf-8")
    assert "s old (over 30s): the archiver process hangs" in health_problem(health, 30, ready=False)
    assert health_problem(health, 300, ready=True) is None
    waiting = {"time": time.time(), "running": False, "error": "AutoReconnect: connection refused"}
    health.write_text(json.dumps(waiting), encoding="utf-8")
    assert health_problem(health, 30, ready=False) is None  # alive: the runner restarts by itself
    assert (
        health_problem(health, 30, ready=True)
        == "oplog archiver not tailing: AutoReconnect: connection refused"
    )
    health.write_text("{not json", encoding="utf-8")
    assert health_problem(health, 30, ready=False).startswith("cannot read the health file")


def test_the_health_file_holds_the_archivers_state_now(tmp_path):
    """What the probe and an operator read: the time of the beat, this process, whether it tails, why
    not, and the newest stored entry's time; written whole (no scratch file left)."""
    health = tmp_path / "pitr-health.json"
    state = PitrState(running=True, last_position=Timestamp(1796601600, 3))
    with clock.set_to(dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)):
        write_health(health, state, redact=str.upper)
    assert json.loads(health.read_text(encoding="utf-8")) == {
        "time": 1796817600.0,
        "pid": os.getpid(),
        "running": True,
        "error": None,
        "lastTimestamp": 1796601600.0,
    }
    assert [p.name for p in tmp_path.iterdir()] == [health.name]


def test_health_file_keeps_secrets_out_and_an_unwritable_path_is_refused(tmp_path, mongo_uri):
    state = PitrState(error="OperationFailure: mongodb://backup:s3cr3t-pw@db:27017/ auth failed")
    redact = Redactor.for_settings(settings_for("mongodb://backup:s3cr3t-pw@db:27017/", tmp_path))
    health = tmp_path / "pitr-health.json"
    write_health(health, state, redact)
    text = health.read_text(encoding="utf-8")
    assert "s3cr3t-pw" not in text and "auth failed" in text
    assert probe(stream_env(mongo_uri, tmp_path), health).returncode == 0

    missing = tmp_path / "no-such-dir" / "pitr-health.json"
    refused = subprocess.run(
        [SIDECAR, "pitr", "stream", "--health-file", str(missing)],
        env=stream_env(mongo_uri, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"sidecar: error: cannot write the health file {missing}: "
        f"[Errno 2] No such file or directory: '{missing.with_name('.pitr-health.json.tmp')}'"
    ]
