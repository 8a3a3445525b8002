"""The job runner and the APScheduler wiring: one job path, single flight, drain and cancel, cron."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger
from prometheus_client.parser import text_string_to_metric_families

from sidecar.api.app import Sidecar
from sidecar.config import Settings
from sidecar.cron import _cron_days, cron_trigger
from sidecar.jobs import Job, JobBusy, JobLock
from sidecar.service import BackupService, ShuttingDown


@pytest.fixture
async def sidecar(
    make_settings: Callable[..., Settings], sample_counts: dict[str, int]
) -> AsyncIterator[Sidecar]:
    settings = make_settings(
        admin_token="admin-token-for-scheduler-0001",
        verify_after_backup="off",
        health_interval_seconds="0.5",
        schedule="30 3 * * *",
        timezone="Asia/Seoul",
    )
    sidecar = Sidecar(settings)
    await sidecar.start()
    try:
        yield sidecar
    finally:
        await sidecar.stop(grace=5)


def gauge_value(sidecar: Sidecar, name: str) -> float:
    for family in text_string_to_metric_families(sidecar.metrics.render()[0].decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


def blocking_work(sidecar: Sidecar, release: threading.Event) -> Callable[[Job], str]:
    """A job body that holds the runner like a long backup until released or cancelled."""

    def work(job: Job) -> str:
        job.state = "running"
        sidecar.runner.job_started(job)
        while not release.wait(0.05):
            if sidecar.service.cancel.is_set():
                job.state = "failed"
                return "cancelled"
        job.state = "succeeded"
        return "finished"

    return work


async def test_cron_jobs_use_config_timezone_and_anti_storm_defaults(sidecar: Sidecar) -> None:
    scheduler = sidecar.scheduler.scheduler
    backup = scheduler.get_job("backup")
    assert isinstance(backup.trigger, CronTrigger) and str(backup.trigger.timezone) == "Asia/Seoul"
    assert backup.next_run_time.hour == 3 and backup.next_run_time.minute == 30
    assert backup.coalesce is True and backup.max_instances == 1
    assert backup.misfire_grace_time == sidecar.settings.schedule_misfire_grace_seconds
    drill = scheduler.get_job("drill")
    assert drill.next_run_time.weekday() == 6 and drill.next_run_time.hour == 4  # Sunday 04:00
    status = sidecar.scheduler.status()
    assert status["backup"]["nextRun"].endswith("Z") and status["drill"]["nextRun"].endswith("Z")
    assert status["timezone"] == "Asia/Seoul" and status["healthProbe"]["intervalSeconds"] == 0.5
    assert (
        gauge_value(sidecar, "mongobackup_next_backup_timestamp_seconds") == backup.next_run_time.timestamp()
    )


async def test_schedule_off_has_no_backup_job(make_settings: Callable[..., Settings]) -> None:
    sidecar = Sidecar(make_settings(schedule="off", drill_schedule="off"))
    await sidecar.start()
    try:
        assert sidecar.scheduler.scheduler.get_job("backup") is None
        assert sidecar.scheduler.status()["backup"]["nextRun"] is None
        assert gauge_value(sidecar, "mongobackup_next_backup_timestamp_seconds") == 0
    finally:
        await sidecar.stop()


async def test_health_probes_refresh_the_cache(sidecar: Sidecar) -> None:
    first = sidecar.health.snapshot.checked_at
    assert first > 0 and sidecar.health.snapshot.mongodb_up
    for _ in range(40):
        await asyncio.sleep(0.1)
        if sidecar.health.snapshot.checked_at > first:
            break
    assert sidecar.health.snapshot.checked_at > first


async def test_scheduled_backup_is_the_same_job_path(sidecar: Sidecar) -> None:
    await sidecar.scheduler.scheduled_backup()
    (entry,) = sidecar.service.list_backups()
    assert entry["status"] == "completed" and entry["trigger"] == "schedule"
    (job,) = sidecar.service.jobs.values()
    assert job.trigger == "schedule" and job.state == "succeeded"
    text = sidecar.metrics.render()[0].decode()
    assert 'mongobackup_backup_runs_total{trigger="schedule"} 1.0' in text
    assert 'mongobackup_backup_successes_total{trigger="schedule"} 1.0' in text


async def test_scheduled_backup_skips_when_another_process_holds_the_lock(
    sidecar: Sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    lock = JobLock(sidecar.settings.backup_dir)
    lock.acquire(Job(kind="backup", trigger="cronjob"))
    try:
        await sidecar.scheduler.scheduled_backup()
    finally:
        lock.release()
    assert "scheduled backup skipped" in caplog.text
    assert sidecar.service.list_backups() == [] and not sidecar.service.jobs


async def test_verify_after_backup_when_available(
    make_settings: Callable[..., Settings], sample_counts: dict[str, int]
) -> None:
    sidecar = Sidecar(make_settings(verify_after_backup="full"))
    await sidecar.start()
    try:
        await sidecar.scheduler.scheduled_backup()
    finally:
        await sidecar.stop()
    kinds = [(j.kind, j.state, j.params.get("level")) for j in sidecar.service.jobs.values()]
    assert kinds == [("backup", "succeeded", None), ("verify", "succeeded", "full")]
    backup_job = next(iter(sidecar.service.jobs.values()))
    assert backup_job.result["verifyJobId"] == list(sidecar.service.jobs)[1]


async def test_single_flight(sidecar: Sidecar) -> None:
    release = threading.Event()
    job, task = await sidecar.runner.submit("backup", "manual", blocking_work(sidecar, release))
    with pytest.raises(JobBusy) as busy:
        await sidecar.runner.submit("backup", "schedule", sidecar.service.run_backup)
    assert busy.value.holder["id"] == job.id
    release.set()
    assert await task == "finished"
    assert sidecar.runner.running_job() is None and not sidecar.runner.busy


async def test_drain_lets_a_short_job_finish(sidecar: Sidecar) -> None:
    release = threading.Event()
    _, task = await sidecar.runner.submit("backup", "manual", blocking_work(sidecar, release))
    asyncio.get_running_loop().call_later(0.3, release.set)
    assert await sidecar.runner.drain(grace=10) is True
    assert task.result() == "finished" and not sidecar.service.cancel.is_set()
    with pytest.raises(ShuttingDown):
        await sidecar.runner.submit("backup", "manual", sidecar.service.run_backup)


async def test_drain_cancels_after_the_grace_period(sidecar: Sidecar) -> None:
    release = threading.Event()
    _, task = await sidecar.runner.submit("backup", "manual", blocking_work(sidecar, release))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sidecar.runner.drain(grace=0.3) is False
    assert 0.3 <= loop.time() - t0 < 5
    assert task.result() == "cancelled" and sidecar.service.cancel.is_set()


async def test_an_earlier_cancel_does_not_stop_the_next_job(sidecar: Sidecar) -> None:
    sidecar.service.cancel.set()  # e.g. left set by a dump that stopped early
    _, task = await sidecar.runner.submit("backup", "manual", sidecar.service.run_backup)
    entry: Any = await task
    assert entry["status"] == "completed"


async def test_failure_before_the_service_runs_is_recorded(sidecar: Sidecar) -> None:
    def broken(job: Job) -> None:
        raise RuntimeError("could not even start")

    job, task = await sidecar.runner.submit("verify", "schedule", broken)
    with pytest.raises(RuntimeError):
        await task
    assert job.state == "failed" and job.error == "could not even start" and job.finished_at


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("MON-FRI", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("0,6", "sun,sat"),
        ("*", "*"),
    ],
)
def test_cron_day_of_week_is_standard_cron(field: str, names: str) -> None:
    # APScheduler 3's from_crontab reads 0 as Monday; the runbook's and Kubernetes' cron read Sunday.
    assert _cron_days(field) == names


def test_weekly_drill_default_is_sunday() -> None:
    import datetime as dt

    trigger = cron_trigger("0 4 * * 0", "Asia/Seoul")
    after = dt.datetime(2024, 12, 2, tzinfo=dt.UTC)  # a Monday
    fire = trigger.get_next_fire_time(None, after)
    assert fire.isoformat() == "2024-12-08T04:00:00+09:00" and fire.strftime("%A") == "Sunday"


async def test_scheduled_drill_tests_the_newest_backup(
    sidecar: Sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    await sidecar.scheduler.scheduled_drill()  # nothing to drill yet
    (nothing,) = sidecar.service.jobs.values()
    assert nothing.state == "failed" and "no completed backup" in nothing.error
    assert "scheduled restore drill did not pass" in caplog.text
    await sidecar.scheduler.scheduled_backup()
    await sidecar.scheduler.scheduled_drill()
    drill = list(sidecar.service.jobs.values())[-1]
    assert drill.kind == "verify" and drill.params["level"] == "drill" and drill.state == "succeeded"
    (entry,) = sidecar.service.list_backups()
    assert drill.params["fileName"] == entry["fileName"] and entry["verification"]["drill"]["ok"]


async def test_backup_by_another_process_reaches_the_metrics(sidecar: Sidecar) -> None:
    if getattr(sidecar.metrics, "refresh_catalog_if_changed", None) is None:
        pytest.skip("SidecarMetrics.refresh_catalog_if_changed is not in this build")
    assert gauge_value(sidecar, "mongobackup_backup_last_success_timestamp_seconds") == 0
    other = BackupService(sidecar.settings)  # e.g. `sidecar backup --once` from a CronJob
    await asyncio.to_thread(other.run_backup, other.new_job("backup", "cronjob"))
    for _ in range(50):
        await asyncio.sleep(0.1)
        if gauge_value(sidecar, "mongobackup_backup_last_success_timestamp_seconds") > 0:
            break
    assert gauge_value(sidecar, "mongobackup_backup_last_success_timestamp_seconds") > 0
