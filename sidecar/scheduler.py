"""The cron and interval jobs of a long-running sidecar (APScheduler 3); they start service jobs
through the same ``JobRunner`` as the HTTP API, so a scheduled backup and a manual one are one path.

Schedule (all times in ``SIDECAR_TIMEZONE``): backups on ``SIDECAR_SCHEDULE``, each followed by an
integrity test at ``SIDECAR_VERIFY_AFTER_BACKUP`` (retention runs inside the backup job); a restore
drill of the newest backup on ``SIDECAR_DRILL_SCHEDULE``; the pitr level (the oplog archive replayed
from one base backup to the next) on ``SIDECAR_PITR_VERIFY_SCHEDULE``; health probes every
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
from sidecar.jobs import JobBusy
from sidecar.service import JobFailed, JobRunner, ShuttingDown
from sidecar.text import iso_utc

log = logging.getLogger("sidecar.scheduler")


class SidecarScheduler:
    """The cron and interval jobs of a long-running sidecar."""

    def __init__(self, settings: Settings, runner: JobRunner, health: Any, metrics: Any | None = None):
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
        for job_id, expression, run in (
            ("backup", s.schedule, self.scheduled_backup),
            ("drill", s.drill_schedule, self.scheduled_drill),
            ("pitr-verify", s.pitr_verify_schedule, self.scheduled_pitr_verify),
        ):
            if expression:
                self.scheduler.add_job(run, cron_trigger(expression, s.timezone), id=job_id, name=job_id)
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

    def _next_time(self, job_id: str) -> dt.datetime | None:
        job = self.scheduler.get_job(job_id) if self.scheduler.running else None
        return getattr(job, "next_run_time", None) if job else None

    def next_run(self, job_id: str) -> str | None:
        when = self._next_time(job_id)
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
            "pitrVerify": {
                "schedule": s.pitr_verify_schedule or None,
                "nextRun": self.next_run("pitr-verify"),
            },
            "healthProbe": {"intervalSeconds": s.health_interval_seconds, "nextRun": self.next_run("health")},
            "misfireGraceSeconds": s.schedule_misfire_grace_seconds,
        }

    def _publish_next_backup(self) -> None:
        if self.metrics is None:
            return
        when = self._next_time("backup")
        self.metrics.set_next_backup(when.timestamp() if when else None)

    # -- the scheduled jobs ----------------------------------------------------------------------

    async def _run_scheduled(
        self, what: str, kind: str, work: Callable[..., Any], *, failure_logged: bool = False, **params: Any
    ) -> dict[str, Any] | None:
        """The one wrapper of a scheduled job: its result, or None when it was skipped (another job
        runs), failed (logged here unless the service has logged it) or the sidecar shuts down."""
        try:
            _, task = await self.runner.submit(kind, "schedule", work, **params)
            return await asyncio.shield(task)
        except JobBusy as exc:
            log.warning("scheduled %s skipped: %s", what, exc)
        except JobFailed as exc:
            if not failure_logged:
                log.error("scheduled %s did not pass: %s", what, exc)
        except ShuttingDown:
            pass
        return None

    async def scheduled_backup(self) -> None:
        # a failure: the service logged it with the job id, recorded it in the catalog and metrics
        try:
            await self._run_scheduled("backup", "backup", self.runner.service.run_backup, failure_logged=True)
        finally:
            self._publish_next_backup()

    async def scheduled_drill(self) -> None:
        await self._run_scheduled("restore drill", "verify", self.runner.service.run_drill, level="drill")

    async def scheduled_pitr_verify(self) -> None:
        """The pitr level, beside the drill: the oplog archive replayed from base backup N-1 to N."""
        check = self.runner.service.run_pitr_verify
        result = await self._run_scheduled("pitr verification", "verify", check, level="pitr")
        if result and result.get("skipped"):
            log.info("scheduled pitr verification skipped: %s", result["skipped"])

    async def probe_health(self) -> None:
        """Refresh the caches /health and /metrics read: MongoDB and disk, and the catalog summary
        when another process (a CronJob, the CLI) changed backup-info.json."""
        for work, what in (
            (lambda: self.health.probe(), "health probe"),
            (lambda: self.metrics.refresh_catalog_if_changed(), "catalog refresh for the metrics"),
        ):
            try:
                await asyncio.to_thread(work)
            except asyncio.CancelledError:
                return  # the scheduler is shutting down: the probe ends in its thread, nothing to report
            except Exception:
                log.exception("%s failed", what)
