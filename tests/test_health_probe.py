"""The health probe against a server that refuses the password: it ends within its budget (below the
probe interval), so probes never pile up, and `sidecar serve` stops on Ctrl-C without a traceback."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from sidecar.embedded import EmbeddedServer, free_port
from sidecar.health import HealthMonitor, probe_timeout
from tests.helpers import settings_for
from tests.test_api_sigterm import Serve, call

DOWN = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"  # nothing listens there


def wrong_password(uri: str) -> str:
    return uri.replace("mongodb://", "mongodb://backup:wrong-password@", 1)


def test_the_probe_budget_is_the_connect_timeout_below_the_interval(tmp_path: Path) -> None:
    uri = "mongodb://127.0.0.1:1"
    assert probe_timeout(settings_for(uri, tmp_path, health_interval_seconds=5)) == 4.0
    assert probe_timeout(settings_for(uri, tmp_path, health_interval_seconds=60)) == 5.0  # connect timeout
    # rounded down to pymongo's 0.5 s server selection step, which it would overrun otherwise
    assert probe_timeout(settings_for(uri, tmp_path, health_interval_seconds=1)) == 0.5
    assert probe_timeout(settings_for(uri, tmp_path, health_interval_seconds=2)) == 1.5
    assert probe_timeout(settings_for(uri, tmp_path, health_interval_seconds=0.5)) == 0.4


def test_a_probe_of_a_server_that_does_not_answer_ends_before_the_next_one(tmp_path: Path) -> None:
    (tmp_path / "backups").mkdir()
    monitor = HealthMonitor(settings_for(DOWN, tmp_path, health_interval_seconds=2))
    t0 = time.monotonic()
    snapshot = monitor.probe()
    # the budget (1.5 s) holds, not the 5 s connect timeout; the slack is for a loaded machine
    assert time.monotonic() - t0 < 4
    assert snapshot.error.endswith(f"no answer within {probe_timeout(monitor.settings):g}s")


def test_a_probe_with_a_wrong_password_ends_within_its_budget(tmp_path: Path, mongo_uri: str) -> None:
    settings = settings_for(wrong_password(mongo_uri), tmp_path, health_interval_seconds=1)
    (tmp_path / "backups").mkdir()
    monitor = HealthMonitor(settings)
    try:
        for _ in range(2):
            t0 = time.monotonic()
            snapshot = monitor.probe()
            assert time.monotonic() - t0 < 0.5  # refused at once, never the whole budget
            assert not snapshot.mongodb_up and snapshot.error.endswith("unreachable: authentication failed")
            assert "wrong-password" not in snapshot.error
    finally:
        monitor.close()


def test_serve_with_a_wrong_password_probes_on_time_and_stops_without_a_traceback(
    tmp_path: Path, own_server: EmbeddedServer
) -> None:
    serve = Serve(tmp_path, wrong_password(own_server.uri), grace=5, health_interval_seconds="1")
    try:
        time.sleep(4.5)
        status, health = call(serve.port, "GET", "/health", None)
        assert status == 200 and health["status"] == "degraded", health
        assert "authentication failed" in str(health)
        serve.process.send_signal(signal.SIGINT)  # what Ctrl-C sends, most likely during a probe
        assert serve.process.wait(30) == 0
    finally:
        if serve.process.poll() is None:
            serve.process.kill()
    output = serve.out.read_text()
    assert "maximum number of running instances" not in output
    assert "Traceback" not in output and "CancelledError" not in output
    assert not [r for r in serve.log() if r["level"] in ("ERROR", "CRITICAL")]
