"""The CLI progress line: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import io
import time

from bson.timestamp import Timestamp

from sidecar.engine.replay.engine import AppliedProgress
from sidecar.health import HealthMonitor
from sidecar.jobs import Job
from sidecar.metrics import SidecarMetrics
from sidecar.progress import Progress, TerminalProgress
from sidecar.service import BackupService
from tests.test_job_path import sample


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_shows_namespaces_documents_and_bytes():
    job = Job(kind="backup", trigger="manual")
    screen = FakeTerminal()
    with TerminalProgress(job.progress, stream=screen, interval=0.01):
        p = job.progress
        p.namespaces_total, p.namespaces_done, p.documents, p.bytes = 4, 2, 12345, 5_500_000
        time.sleep(0.05)
    last = screen.getvalue().split("\r")[-1]
    assert last == "[############............] 2/4 namespaces  12,345 documents  5.5 MB\n"


def test_progress_is_silent_when_not_a_terminal():
    job = Job(kind="backup", trigger="manual")
    pipe = io.StringIO()
    with TerminalProgress(job.progress, stream=pipe, interval=0.01):
        job.progress.namespaces_total = job.progress.namespaces_done = 1
        time.sleep(0.03)
    assert pipe.getvalue() == ""


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_counted_pass_reports_ratio_rate_eta_and_the_point_reached():
    clock = FakeClock()
    p = Progress(now=clock)
    p.begin("oplog-replay", unit="entries", total=20_000)
    assert p.as_json()["ratePerSecond"] is None and p.as_json()["etaSeconds"] is None
    clock.t += 5
    p.advance(2_000, Timestamp(1_733_030_467, 3))
    p.advance(500, Timestamp(1_733_030_470, 1))
    shown = p.as_json()
    assert (shown["unit"], shown["done"], shown["total"], shown["ratio"]) == ("entries", 2_500, 20_000, 0.125)
    assert shown["ratePerSecond"] == 500.0 and shown["etaSeconds"] == 35.0
    assert shown["pointReached"] == {"t": 1_733_030_470, "i": 1, "time": "2024-12-01T05:21:10.000Z"}
    line = TerminalProgress(p, stream=FakeTerminal())._line()
    assert line == (
        "\r[###.....................] 2,500/20,000 entries  500/s  ETA 0:35  at 2024-12-01T05:21:10.000Z"
        "  oplog-replay    "
    )
    p.advance(17_500)
    clock.t += 30  # done: the rate is the pass's, not one that decays while the job goes on
    assert p.as_json()["ratePerSecond"] == 4_000.0 and p.as_json()["etaSeconds"] == 0
    p.begin("documents")  # a new pass: nothing counted, no total
    assert (p.done, p.total, p.position, p.as_json()["ratio"]) == (0, 0, None, None)


def test_a_restores_writes_count_the_archives_documents_and_bytes():
    clock = FakeClock()
    p = Progress(now=clock)
    p.begin("prepare", 2)
    p.phase = "documents"
    p.count("documents", 800, bytes_total=4_000_000)
    clock.t += 2
    p.documents, p.bytes = 400, 2_000_000
    p.advance(400)
    line = TerminalProgress(p, stream=FakeTerminal())._line()
    assert (
        line
        == "\r[############............] 400/800 documents  2.0/4.0 MB  200/s  ETA 0:02  documents       "
    )
    assert p.as_json()["bytesTotal"] == 4_000_000 and p.as_json()["etaSeconds"] == 2.0


def test_a_scrape_during_a_restore_shows_its_pass(make_settings):
    settings = make_settings()
    service = BackupService(settings)
    health = HealthMonitor(settings)
    metrics = SidecarMetrics(settings, service, health)
    clock = FakeClock()
    try:
        assert sample(metrics, "mongobackup_restore_in_progress") == 0
        assert sample(metrics, "mongobackup_restore_replay_position_timestamp_seconds") == 0
        job = service.new_job("restore")
        job.progress.now = clock
        job.progress.begin("oplog-replay", unit="entries", total=1_000)
        clock.t += 10
        job.progress.advance(250, Timestamp(1_733_030_467, 3))
        service.current = job  # as while the restore runs
        assert sample(metrics, "mongobackup_restore_in_progress") == 1
        assert sample(metrics, "mongobackup_restore_progress_ratio") == 0.25
        assert sample(metrics, "mongobackup_restore_eta_seconds") == 30
        assert sample(metrics, "mongobackup_restore_replay_position_timestamp_seconds") == 1_733_030_467
        assert job.as_json()["progress"]["etaSeconds"] == 30
    finally:
        health.close()


def test_a_parallel_replay_counts_an_entry_once_its_writes_are_written():
    p = Progress(now=FakeClock())
    p.begin("oplog-replay", unit="entries", total=3)
    applied = AppliedProgress(p, deferred=True)
    applied.handed_on(2, 1, Timestamp(10, 1))
    applied.handed_on(0, 2, Timestamp(10, 2))  # an entry without writes (a no-op)
    applied.handed_on(3, 3, Timestamp(11, 1))
    assert (p.done, p.position) == (0, None)  # handed on, not yet written
    applied.written(2)
    assert (p.done, p.position) == (2, Timestamp(10, 2))
    applied.written(2)
    assert p.done == 2  # the third entry's writes are not all written yet
    applied.written(1)
    assert (p.done, p.position) == (3, Timestamp(11, 1))
    in_order = Progress(now=FakeClock())
    AppliedProgress(in_order, deferred=False).handed_on(2, 1, Timestamp(10, 1))
    assert (in_order.done, in_order.position) == (1, Timestamp(10, 1))


def test_a_shorter_line_is_drawn_over_the_whole_longer_one():
    p = Progress(now=FakeClock())
    screen = FakeTerminal()
    terminal = TerminalProgress(p, stream=screen)
    p.begin("documents")
    p.count("documents", 800, bytes_total=4_000_000)
    terminal._draw()
    longer = len(screen.getvalue())
    p.begin("oplog-replay", unit="entries", total=10)
    terminal._draw()
    assert len(screen.getvalue().split("\r")[-1]) == longer - 1  # padded: nothing of the first is left


def test_a_plain_restore_counts_the_archives_documents_and_bytes(make_settings, sample_counts, mongo_client):
    settings = make_settings(database="maekcord", verify_after_backup="off")
    service = BackupService(settings)
    entry = service.run_backup(service.new_job("backup", "manual"))
    job = service.new_job("restore")
    seen: list[tuple[int, int, int, int]] = []
    advance = job.progress.advance

    def record(count: int, position: Timestamp | None = None) -> None:
        advance(count, position)
        p = job.progress
        if p.unit == "documents":
            seen.append((p.done, p.total, p.bytes, p.bytes_total))

    job.progress.advance = record  # type: ignore[method-assign]
    result = service.run_restore(
        job,
        file_name=entry["fileName"],
        ns_from=["maekcord.*"],
        ns_to=["progress_restore.*"],
        oplog_replay=False,
    )
    assert len(seen) > 1 and {t for _, t, _, _ in seen} == {result["documents"]}
    assert {b for _, _, _, b in seen} == {result["bytes"]} and result["bytes"] > 0
    done = [d for d, _, _, _ in seen]
    assert done == sorted(done) and done[-1] == result["documents"] == result["documentsWritten"]
    assert seen[-1][2] == result["bytes"]  # the archive's bytes of those namespaces, all written
