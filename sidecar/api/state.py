"""The long-running ``Sidecar`` (service, health, metrics, jobs, scheduler, oplog archiver, log tail) and
the app key under which the routes find it. Its own module so that ``app.py`` and ``routes.py`` both
import it and not each other.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from sidecar.config import ConfigError, Settings, check_backup_dir
from sidecar.health import HealthMonitor
from sidecar.logs import LogTail, Redactor
from sidecar.metrics import SidecarMetrics
from sidecar.pitr.capture.runner import STANDALONE_RECHECK_SECONDS, PitrRunner
from sidecar.scheduler import SidecarScheduler
from sidecar.service import BackupService, JobRunner


class Sidecar:
    """Everything a running sidecar holds: service, health cache, metrics, job runner, scheduler, logs."""

    def __init__(self, settings: Settings, *, log_tail: LogTail | None = None):
        self.settings = settings
        self.service = BackupService(settings)
        self.health = HealthMonitor(settings)
        self.pitr = PitrRunner(settings, standalone_recheck=STANDALONE_RECHECK_SECONDS)
        self.metrics = SidecarMetrics(settings, self.service, self.health, pitr=self.pitr.state)
        self.runner = JobRunner(self.service)
        self.scheduler = SidecarScheduler(settings, self.runner, self.health, self.metrics)
        self.log_tail = log_tail or LogTail(Redactor.for_settings(settings))
        self.started_at = time.time()
        self.stopping = False
        self._stopped = False

    def _prepare(self) -> None:
        check_backup_dir(self.settings)
        self.metrics.refresh_catalog()
        self.health.probe()
        if self.settings.pitr == "on" and self.health.snapshot.replset_state == -1:
            raise ConfigError("SIDECAR_PITR=on needs a replica set member; this server is standalone")

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare)
        self.scheduler.start()
        self.pitr.start()

    async def stop(self, grace: float | None = None) -> bool:
        """Drain jobs (see the module doc); True when nothing had to be cancelled."""
        if self._stopped:
            return True
        self.stopping = True
        self.scheduler.shutdown()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        archiver = asyncio.create_task(asyncio.to_thread(self.pitr.stop, grace))  # stores its last slice
        clean = await self.runner.drain(grace)
        await archiver
        await asyncio.to_thread(self.health.close)
        self._stopped = True
        return clean


SIDECAR_KEY = web.AppKey("sidecar", Sidecar)
