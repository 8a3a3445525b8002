"""``sidecar pitr status`` in a process of its own tells whether an archiver runs (from its lock and its
presence file), since when, caught up to when and the RPO; a killed archiver is not reported running;
with MongoDB stopped the status prints the archive's facts, one line of error and exits 4."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pymongo

from sidecar.cli.pitr import EXIT_SERVER_UNREACHABLE
from sidecar.pitr.capture.presence import PRESENCE_FILE
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from tests.helpers import settings_for
from tests.pitr_support import wait_for_slices
from tests.test_pitr_process import SIDECAR, start_stream, stream_env


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SIDECAR, "pitr", "status", *args], env=env, capture_output=True, text=True, timeout=60
    )


def archiver_of(env: dict[str, str]) -> dict:
    shown = status(env, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["archiver"]


def test_pitr_status_says_whether_the_archiver_runs_and_prints_the_archive_with_mongodb_down(
    own_server, tmp_path
):
    client = pymongo.MongoClient(own_server.uri)
    settings = settings_for(own_server.uri, tmp_path, pitr="auto")
    env = stream_env(own_server.uri, tmp_path) | {"SIDECAR_CONNECT_TIMEOUT_SECONDS": "1"}
    assert archiver_of(env)["running"] is False and archiver_of(env)["pid"] is None
    assert "archiver: not running (it never ran on this directory)" in status(env).stdout

    process = start_stream(env, tmp_path / "stream.log")
    try:
        deadline = time.monotonic() + 30
        while not (seen := archiver_of(env))["running"]:  # tailing: writes from now on are archived
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        client.app.patients.insert_many([{"n": n} for n in range(50)])
        wait_for_slices(settings, 1)
        seen = archiver_of(env)  # rewritten after the slice: caught up to its entries at least
        assert seen["running"] and seen["pid"] == process.pid and seen["since"] and seen["lastError"] is None
        assert seen["caughtUp"] and 0 <= seen["rpoSeconds"] < 60
        text = status(env).stdout
        assert f"archiver: running since {seen['since']} (pid {process.pid}), caught up to " in text
    finally:
        process.kill()  # SIGKILL: its presence file still says running; its lock went with it
        assert process.wait(10) == -signal.SIGKILL
    assert json.loads((oplog_dir(settings) / PRESENCE_FILE).read_text())["running"] is True
    seen = archiver_of(env)
    assert seen["running"] is False and seen["locked"] is False and seen["processAlive"] is False
    assert seen["stoppedAt"] and seen["pid"] == process.pid
    assert f"archiver: not running (pid {process.pid} stopped at {seen['stoppedAt']})" in status(env).stdout

    count = len(SliceCatalog(oplog_dir(settings)).slices())
    own_server.stop()
    for args in ((), ("--json",)):
        shown = status(env, *args)
        assert shown.returncode == EXIT_SERVER_UNREACHABLE == 4
        assert len(shown.stderr.splitlines()) == 1, shown.stderr
        assert shown.stderr.startswith(
            "sidecar: error: cannot read the server's oplog window: ServerSelectionTimeoutError: "
        )
        assert "Topology" not in shown.stderr
    assert json.loads(shown.stdout)["slices"]["count"] == count  # the archive's facts, still printed
    text = status(env).stdout
    assert f"slices: {count} (" in text and "server oplog: unknown (the server cannot be reached)" in text
