"""Running jobs from the event loop (``JobRunner``) and on a clock (``SidecarScheduler``, APScheduler 3).

Both the HTTP API and the scheduler start jobs through ``JobRunner``, which hands the blocking work of
``BackupService`` to a worker thread, keeps one job at a time (the service's lock is the final word,
also across processes), and stops taking jobs on shutdown. A scheduled backup and a manual one are the
same code path.

Schedule (all times in ``SIDECAR_TIMEZONE``): backups on ``SIDECAR_SCHEDULE``, each followed by an
integrity test at ``SIDECAR_VERIFY_AFTER_BACKUP`` (retention runs inside the backup job); a restore
drill of the newest backup on ``SIDECAR_DRILL_SCHEDULE``; health probes every
``SIDECAR_HEALTH_INTERVAL_SECONDS`` into the cache that /health and /metrics read. Missed runs are
coalesced into one and dropped past ``SIDECAR_SCHEDULE_MISFIRE_GRACE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sidecar.config import Settings
from sidecar.cron import cron_trigger
from sidecar.jobs import Job, JobBusy
from sidecar.logs import JOB_ID
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import full_backups, iso_utc

log = logging.getLogger("sidecar.scheduler")


class ShuttingDown(RuntimeError):
    """The sidecar is stopping and takes no new jobs."""


class JobRunner:
    """Starts service jobs in worker threads; one at a time; drains and cancels on shutdown."""

    def __init__(self, service: BackupService, settings: Settings):
        self.service, self.settings = service, settings
        self.accepting = True
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self._task_job: Job | None = None  # the job whose task owns the runner, queued or running
        self._started: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        service.listeners.append(self)

    # -- JobListener: learn from the worker thread when a job holds the lock -----------------------

    def job_started(self, job: Job) -> None:
        event = self._started.get(job.id)
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(event.set)

    def job_finished(self, job: Job) -> None:
        pass

    # -- state -----------------------------------------------------------------------------------

    def running_job(self) -> Job | None:
        """The job that keeps others out: the service's current one, else the one about to start."""
        current = self.service.current
        if current is not None:
            return current
        task_job = self._task_job
        return task_job if task_job is not None and task_job.state in ("queued", "running") else None

    @property
    def busy(self) -> bool:
        return self._task_job is not None or self.service.current is not None

    # -- starting jobs ---------------------------------------------------------------------------

    async def submit(
        self, kind: str, trigger: str, work: Callable[[Job], Any], **params: Any
    ) -> tuple[Job, asyncio.Task[Any]]:
        """Start ``work(job)`` in a thread; return once it holds the lock or has already ended.

        Raises ShuttingDown when stopping, JobBusy (with the holder) when another job runs here or in
        another process sharing the backup directory.
        """
        if not self.accepting:
            raise ShuttingDown("the sidecar is shutting down and takes no new jobs")
        if self.busy:
            holder = self.running_job() or self._task_job
            raise JobBusy(_holder(holder) if holder else {})
        self._loop = asyncio.get_running_loop()
        job = self.service.new_job(kind, trigger, **params)
        self._task_job = job
        self.service.cancel.clear()  # a cancel aimed at an earlier job must not stop this one
        started = self._started[job.id] = asyncio.Event()
        task = asyncio.create_task(self._run(job, work), name=f"{kind}-{job.id}")
        self.tasks[job.id] = task
        task.add_done_callback(self._done)
        waiter = asyncio.create_task(started.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done() and not task.cancelled() and isinstance(task.exception(), JobBusy):
            raise task.exception()  # type: ignore[misc]
        return job, task

    async def _run(self, job: Job, work: Callable[[Job], Any]) -> Any:
        token = JOB_ID.set(job.id)
        try:
            return await asyncio.to_thread(work, job)
        except JobBusy:
            # Refused before it started (another process holds the lock): not a job that ran.
            self.service.jobs.pop(job.id, None)
            raise
        except BaseException as exc:
            if job.state in ("queued", "running"):  # failed before the service recorded an outcome
                job.state, job.error = "failed", str(exc) or type(exc).__name__
                job.stage = getattr(exc, "stage", job.stage)
                job.finished_at = iso_utc(dt.datetime.now(dt.UTC))
            raise
        finally:
            JOB_ID.reset(token)
            self._started.pop(job.id, None)
            if self._task_job is job:
                self._task_job = None

    def _done(self, task: asyncio.Task[Any]) -> None:
        for job_id, known in list(self.tasks.items()):
            if known is task:
                del self.tasks[job_id]
        if not task.cancelled():
            task.exception()  # retrieved here; the job record holds the outcome

    # -- the job bodies (run in worker threads) --------------------------------------------------

    def backup_then_verify(self, job: Job) -> dict[str, Any]:
        """A backup (with retention), then the configured integrity test of the new archive."""
        entry = self.service.run_backup(job)
        level = self.settings.verify_after_backup
        if level == "off" or not self.accepting:
            return entry
        verify_job = self.service.new_job("verify", job.trigger, level=level, fileName=entry["fileName"])
        if job.result is not None:
            job.result["verifyJobId"] = verify_job.id
        try:
            self.service.run_verify(verify_job, file_name=entry["fileName"], level=level)
        except (JobFailed, JobBusy) as exc:
            log.error(
                "integrity test of %s after the backup did not pass: %s",
                entry["fileName"],
                exc,
                extra={"job_id": verify_job.id},
            )
        return entry

    def drill(self, job: Job) -> Any:
        file_name = job.params.get("fileName") or latest_completed(self.service)
        if file_name is None:
            raise JobFailed("no completed backup to drill", "verify")
        job.params["fileName"] = file_name
        return self.service.run_verify(job, file_name=file_name, level="drill")

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, grace: float) -> bool:
        """Stop taking jobs; let running ones finish within ``grace`` seconds, then cancel them.

        Returns True when every job ended by itself, False when the cancel Event had to be set.
        """
        self.accepting = False
        pending = [t for t in self.tasks.values() if not t.done()]
        if not pending:
            return True
        running = self.running_job()
        log.warning(
            "shutdown: waiting up to %gs for %s to finish",
            grace,
            f"{running.kind} job {running.id}" if running else "the running job",
        )
        _, still = await asyncio.wait(pending, timeout=grace)
        if not still:
            return True
        log.warning("shutdown: grace period over, cancelling the running job")
        self.service.cancel.set()
        await asyncio.wait(still)
        return False


def _holder(job: Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "startedAt": job.started_at, "state": job.state}


def latest_completed(service: BackupService) -> str | None:
    """The newest completed backup, not counting the safety copies taken before restores."""
    good = full_backups(service.list_backups())
    return good[-1]["fileName"] if good else None


class SidecarScheduler:
    """The cron and interval jobs of a long-running sidecar."""

    def __init__(
        self,
        settings: Settings,
        runner: JobRunner,
        health: Any,
        metrics: Any | None = None,
    ):
        self.settings, self.runner, self.health, self.metrics = settings, runner, health, metrics
        self.scheduler = AsyncIOScheduler(
            timezone=settings.timezone,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": settings.schedule_misfire_grace_seconds,
            },
        )

    def start(self) -> None:
        s = self.settings
        if s.schedule:
            self.scheduler.add_job(
                self.scheduled_backup,
                cron_trigger(s.schedule, s.timezone),
                id="backup",
                name="backup",
            )
        if s.drill_schedule:
            self.scheduler.add_job(
                self.scheduled_drill,
                cron_trigger(s.drill_schedule, s.timezone),
                id="drill",
                name="drill",
            )
        self.scheduler.add_job(
            self.probe_health,
            IntervalTrigger(seconds=s.health_interval_seconds),
            id="health",
            name="health",
            misfire_grace_time=None,
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self.scheduler.start()
        self._publish_next_backup()
        log.info(
            "scheduler started: backups %s, drills %s (%s); next backup %s",
            s.schedule or "off",
            s.drill_schedule or "off",
            s.timezone,
            self.next_run("backup") or "none",
        )

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def next_run(self, job_id: str) -> str | None:
        job = self.scheduler.get_job(job_id) if self.scheduler.running else None
        when = getattr(job, "next_run_time", None) if job else None
        return iso_utc(when) if when else None

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            "running": self.scheduler.running,
            "timezone": s.timezone,
            "backup": {
                "schedule": s.schedule or None,
                "nextRun": self.next_run("backup"),
                "verifyAfter": s.verify_after_backup,
            },
            "drill": {"schedule": s.drill_schedule or None, "nextRun": self.next_run("drill")},
            "healthProbe": {"intervalSeconds": s.health_interval_seconds, "nextRun": self.next_run("health")},
            "misfireGraceSeconds": s.schedule_misfire_grace_seconds,
        }

    def _publish_next_backup(self) -> None:
        if self.metrics is None:
            return
        job = self.scheduler.get_job("backup") if self.scheduler.running else None
        when = getattr(job, "next_run_time", None) if job else None
        self.metrics.set_next_backup(when.timestamp() if when else None)

    # -- the scheduled jobs ----------------------------------------------------------------------

    async def scheduled_backup(self) -> None:
        try:
            _, task = await self.runner.submit("backup", "schedule", self.runner.backup_then_verify)
            await asyncio.shield(task)
        except JobBusy as exc:
            log.warning("scheduled backup skipped: %s", exc)
        except ShuttingDown:
            pass
        except JobFailed:
            pass  # the service logged it with the job id and recorded it in the catalog and metrics
        finally:
            self._publish_next_backup()

    async def scheduled_drill(self) -> None:
        try:
            _, task = await self.runner.submit("verify", "schedule", self.runner.drill, level="drill")
            await asyncio.shield(task)
        except JobBusy as exc:
            log.warning("scheduled restore drill skipped: %s", exc)
        except JobFailed as exc:
            log.error("scheduled restore drill did not pass: %s", exc)
        except ShuttingDown:
            pass

    async def probe_health(self) -> None:
        """Refresh the caches /health and /metrics read: MongoDB and disk, and the catalog summary
        when another process (a CronJob, the CLI) changed backup-info.json."""
        try:
            await asyncio.to_thread(self.health.probe)
        except asyncio.CancelledError:
            return  # the scheduler is shutting down: the probe ends in its thread, nothing to report
        except Exception:
            log.exception("health probe failed")
        try:
            await asyncio.to_thread(self.metrics.refresh_catalog_if_changed)
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("catalog refresh for the metrics failed")
