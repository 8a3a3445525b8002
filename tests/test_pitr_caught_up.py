"""The oplog archive's caught-up time, the RPO signal, against a real server: it keeps moving while the
server is idle (the newest stored entry does not), it stays at the first entry of a slice that is still
open, and the alerts endpoint's RPO condition reads it against SIDECAR_ALERT_PITR_RPO_SECONDS."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from sidecar.alerts import evaluate
from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.health import HealthMonitor
from sidecar.metrics import SidecarMetrics
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.capture.tailer import is_replica_set_member, oplog_window
from sidecar.service import BackupService
from tests.helpers import discard, settings_for
from tests.pitr_support import archiving, wait_until_stored

RPO = "MongoBackupPitrRpoBreached"


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SIDECAR_TEST_MONGODB_URI (a real mongod; a replica-set member, or these tests are skipped), else a
    private embedded server with a small oplog (every oplog query of the embedded server scans it all)."""
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    if given:
        with pymongo.MongoClient(given, serverSelectionTimeoutMS=10000) as client:
            if not is_replica_set_member(client):
                pytest.skip("SIDECAR_TEST_MONGODB_URI is a standalone server: it has no oplog to archive")
        yield given
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("caught-up") / "data").start()
    try:
        yield server.uri
    finally:
        discard(server)


def rpo_condition(settings: Settings, state: PitrState, now: float) -> dict:
    alerts = evaluate(settings, BackupService(settings), HealthMonitor(settings), now=now, pitr=state)
    return next(a for a in alerts if a["name"] == RPO)


def scraped(settings: Settings, state: PitrState, name: str) -> float:
    metrics = SidecarMetrics(settings, BackupService(settings), HealthMonitor(settings), pitr=state)
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


def wait_running(state: PitrState, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not state.running:
        assert time.monotonic() < deadline, f"the archiver did not start: {state.error}"
        time.sleep(0.05)


def test_caught_up_moves_on_while_the_server_is_idle(uri: str, tmp_path: Path):
    """After one write is stored and nothing else is written for 2.5 s, the caught-up time is fresh
    (within 1.5 s of now) and at least the newest stored entry's: the RPO condition stays quiet. Seen
    from 301 s later with the archiver stopped, the same state breaches the 300 s limit."""
    settings = settings_for(uri, tmp_path, pitr="on", pitr_slice_seconds=0.3)
    with pymongo.MongoClient(uri) as client, archiving(settings) as runner:
        wait_running(runner.state)
        client["caughtup"]["idle"].insert_one({"n": 1})
        wait_until_stored(settings, client)
        time.sleep(2.5)
        state, now = runner.state, time.time()
        caught_up = state.caught_up_timestamp
        assert now - caught_up < 1.5, (now, caught_up, state.last_timestamp)
        assert caught_up >= state.last_timestamp > 0
        assert scraped(settings, state, "mongobackup_pitr_caught_up_timestamp_seconds") == caught_up
        quiet = rpo_condition(settings, state, now)
        assert not quiet["active"] and quiet["threshold"] == 300 and quiet["value"] < 1.5
    breached = rpo_condition(settings, state, state.caught_up_timestamp + 301)
    assert breached["active"] and breached["value"] == pytest.approx(301)


def test_an_open_slice_holds_caught_up_at_its_first_entry(uri: str, tmp_path: Path):
    """With a 60 s slice interval, an entry written after the archiver started stays in the open slice:
    2 s later the caught-up time has not passed the moment of that write (only what came before the
    open slice is stored), though the tail is idle; stopping the archiver stores the slice."""
    settings = settings_for(uri, tmp_path, pitr="on", pitr_slice_seconds=60)
    with pymongo.MongoClient(uri) as client, archiving(settings) as runner:
        wait_running(runner.state)
        client["caughtup"]["open"].insert_one({"n": 1})
        written_by, written = time.time(), oplog_window(client).last
        assert written is not None
        time.sleep(2.0)  # the tail gives the entry out and goes idle (its await is 1 s)
        assert runner.state.last_position is None or runner.state.last_position < written
        assert runner.state.caught_up_timestamp <= written_by
        assert time.time() - runner.state.caught_up_timestamp >= 2.0
    assert runner.state.last_position is not None and runner.state.last_position >= written
