"""One job path: whatever starts a job (scheduler, API, CLI, a restore's safety backup), and whatever
stops it (the directory precheck included), the job is recorded, logged and counted the same.

Against the embedded server (or SIDECAR_TEST_MONGODB_URI) and, for the streaming upload, SeaweedFS.
"""

from __future__ import annotations

import logging
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.api.app import Sidecar
from sidecar.cli import main as cli_main
from sidecar.health import HealthMonitor
from sidecar.jobs import Job
from sidecar.metrics import SidecarMetrics
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import SAFETY_TRIGGER, STATUS_FAILED
from tests import s3_fixture

seaweed, s3_env = s3_fixture.seaweed, s3_fixture.s3_env  # the fixtures, for pytest to find
NO_SPACE = str(1 << 60)  # SIDECAR_MIN_FREE_BYTES no disk can satisfy


class Recorder:
    """A listener that keeps what it was told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def job_started(self, job: Job) -> None:
        self.events.append(("started", job.kind, job.trigger, job.state))

    def job_finished(self, job: Job) -> None:
        self.events.append(("finished", job.kind, job.trigger, job.state))


def sample(metrics: SidecarMetrics, name: str, **labels: str) -> float:
    text, _ = metrics.render()
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} is not exported")


def test_a_backup_refused_by_the_disk_precheck_is_recorded_logged_and_counted(make_settings, caplog):
    settings = make_settings(database="maekcord", min_free_bytes=NO_SPACE)
    service = BackupService(settings)
    recorder = Recorder()
    service.listeners.append(recorder)
    health = HealthMonitor(settings)
    metrics = SidecarMetrics(settings, service, health)
    try:
        with caplog.at_level(logging.ERROR, logger="sidecar.service"), pytest.raises(JobFailed) as info:
            service.run_backup()
        assert info.value.stage == "write" and "SIDECAR_MIN_FREE_BYTES" in str(info.value)
        assert recorder.events == [
            ("started", "backup", "manual", "running"),
            ("finished", "backup", "manual", "failed"),
        ]
        assert any("SIDECAR_MIN_FREE_BYTES" in r.getMessage() for r in caplog.records)
        [entry] = service.list_backups()
        assert entry["status"] == STATUS_FAILED and entry["failedStage"] == "write"
        assert not (settings.backup_dir / entry["fileName"]).exists()
        failures = "mongobackup_backup_failures_total"
        assert sample(metrics, failures, trigger="manual", stage="write") == 1
        assert sample(metrics, "mongobackup_backup_last_success") == 0  # MongoBackupLastFailed's input
    finally:
        health.close()


async def test_a_scheduled_backup_refused_by_the_precheck_is_counted(make_settings):
    sidecar = Sidecar(make_settings(database="maekcord", min_free_bytes=NO_SPACE, schedule="off"))
    try:
        await sidecar.scheduler.scheduled_backup()  # the scheduler swallows the failure, not the count
        failures = "mongobackup_backup_failures_total"
        assert sample(sidecar.metrics, failures, trigger="schedule", stage="write") == 1
        assert sidecar.service.list_backups()[-1]["status"] == STATUS_FAILED
    finally:
        await sidecar.stop(grace=0)


def test_the_safety_backup_is_a_job_of_its_own_inside_the_restore(make_settings, mongo_client, sample_counts):
    service = BackupService(make_settings(database="maekcord", verify_after_backup="off"))
    backup = service.run_backup()
    recorder = Recorder()
    service.listeners.append(recorder)
    report = service.run_restore(file_name=backup["fileName"], ns_include=["maekcord.patients"], drop=True)
    safety = service.jobs[report["safetyBackupJobId"]]
    assert safety.trigger == SAFETY_TRIGGER and safety.state == "succeeded"
    assert safety.params["restoreJobId"] in service.jobs
    assert recorder.events == [
        ("started", "restore", "manual", "running"),
        ("started", "backup", SAFETY_TRIGGER, "running"),
        ("finished", "backup", SAFETY_TRIGGER, "succeeded"),
        ("finished", "restore", "manual", "succeeded"),
    ]
    assert service.catalog.get(report["safetyBackup"])["jobId"] == safety.id


def test_a_streaming_safety_backup_finishes_its_upload(make_settings, s3_env, sample_counts):
    settings = make_settings(
        database="maekcord",
        verify_after_backup="off",
        s3_endpoint=s3_env.endpoint,
        s3_bucket=s3_env.bucket,
        s3_upload_mode="streaming",
    )
    service = BackupService(settings)
    backup = service.run_backup()
    report = service.run_restore(file_name=backup["fileName"], ns_include=["maekcord.patients"], drop=True)
    assert s3_env.open_uploads() == []  # no multipart upload left unfinished
    uploading = [t.name for t in threading.enumerate() if t.name.startswith("s3-upload-")]
    assert uploading == []  # and no upload thread left blocked
    safety = service.catalog.get(report["safetyBackup"])
    assert safety["locations"] == ["local", "s3"]


def test_job_view_is_safe_while_the_worker_changes_the_result():
    job = Job(kind="backup", trigger="manual", result={"uploads": {}})
    stop = threading.Event()

    def worker() -> None:
        n = 0
        while not stop.is_set():
            uploads = job.result["uploads"]
            uploads[f"dest{n % 50}"] = {"bytes": n, "files": [n]}
            if n % 50 == 49:
                uploads.clear()
            n += 1

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        for _ in range(3000):
            job.as_json()  # "dictionary changed size during iteration" would be a 500 in the API
    finally:
        stop.set()
        thread.join()


def test_only_a_failed_job_names_a_failed_stage(make_settings, sample_counts):
    service = BackupService(make_settings(database="maekcord"))
    job = service.new_job("backup")
    service.run_backup(job)
    assert job.state == "succeeded" and job.stage is not None
    assert job.as_json()["failedStage"] is None
    verify_job = service.jobs[job.result["verifyJobId"]]
    assert verify_job.state == "succeeded" and verify_job.as_json()["failedStage"] is None


def test_cli_backup_runs_the_integrity_test_like_the_scheduler(
    make_settings, monkeypatch, capsys, sample_counts
):
    settings = make_settings(database="maekcord")
    monkeypatch.setenv("SIDECAR_MONGODB_URI", settings.mongodb_uri)
    monkeypatch.setenv("SIDECAR_BACKUP_DIR", str(settings.backup_dir))
    monkeypatch.setenv("SIDECAR_LOG_DIR", str(settings.log_dir))
    monkeypatch.setenv("SIDECAR_DATABASE", "maekcord")
    monkeypatch.setenv("SIDECAR_MIN_FREE_BYTES", "0")
    for once in ([], ["--once"]):
        assert cli_main(["backup", "--quiet", *once]) == 0
        assert "full integrity test passed" in capsys.readouterr().out
    entries = BackupService(settings).list_backups()
    assert [e["trigger"] for e in entries] == ["manual", "cronjob"]
    assert all(e["lastVerification"]["ok"] and e["lastVerification"]["level"] == "full" for e in entries)


def test_a_scrape_during_a_backup_shows_the_bytes_it_dumped(make_settings):
    settings = make_settings()
    service = BackupService(settings)
    health = HealthMonitor(settings)
    metrics = SidecarMetrics(settings, service, health)
    try:
        job = service.new_job("backup")
        job.progress.begin("dump", 3)
        job.progress.bytes = 12345
        service.current = job  # as while the backup runs
        assert sample(metrics, "mongobackup_backup_in_progress") == 1
        assert sample(metrics, "mongobackup_backup_in_progress_bytes") == 12345
    finally:
        health.close()
