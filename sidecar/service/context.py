"""What every job runs in (see the package's note): one ``JobContext`` (the lock, the job records,
the listeners, the catalog), the failure type and the connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Protocol

import pymongo
from pymongo.errors import PyMongoError

from sidecar import clock
from sidecar.config import ConfigError, Settings, check_backup_dir
from sidecar.engine.client import ConnectFailed, connected
from sidecar.engine.dump import DumpError
from sidecar.jobs import Job, JobLock
from sidecar.store.catalog import Catalog
from sidecar.store.offsite import Offsite
from sidecar.text import iso_utc

log = logging.getLogger("sidecar.service")


class JobFailed(RuntimeError):
    """A job failed; ``stage`` is one of connect, dump, write, verify, upload (for metrics)."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


def outcome_level(job: Job) -> int:
    """How a finished job is logged: ERROR only for a failure. A restore refused before its first
    write (a typo, a collision, a point outside the archive: "nothing was written") is a WARNING,
    so error-*.log and log-based alerts hear only of what went wrong."""
    if job.state == "succeeded":
        return logging.INFO
    refused = job.kind == "restore" and not job.writing
    return logging.WARNING if refused else logging.ERROR


class JobListener(Protocol):
    """Told from the worker thread as a job starts and ends; a listener may also have
    ``job_writing(job)``, told when a job has passed its checks and makes its first write."""

    def job_started(self, job: Job) -> None: ...

    def job_finished(self, job: Job) -> None: ...


def connect(settings: Settings) -> pymongo.MongoClient:
    """A client that has answered a ping, or JobFailed(stage=connect) naming the host, never the password."""
    try:
        return connected(settings.mongodb_uri, settings.connect_timeout_seconds)
    except ConnectFailed as exc:
        raise JobFailed(str(exc), "connect") from None


def as_failure(exc: BaseException, stage: str, name: str) -> JobFailed:
    if isinstance(exc, JobFailed):
        return exc
    if isinstance(exc, DumpError):
        return JobFailed(str(exc), exc.stage)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return JobFailed(
            f"disk full while writing {name}; the partial file was removed, older archives are intact "
            f"(free space: df -h, or run sidecar prune)",
            "write",
        )
    if isinstance(exc, OSError):
        return JobFailed(f"cannot write {name}: {exc.strerror or exc}", "write")
    if isinstance(exc, PyMongoError):
        return JobFailed(f"MongoDB error during {stage}: {exc}", "dump" if stage == "write" else stage)
    return JobFailed(f"{type(exc).__name__}: {exc}", stage)


MAX_JOB_RECORDS = 100


class JobContext:
    """The state every job shares, and ``running()``, the one way a job runs."""

    def __init__(self, settings: Settings, listeners: list[JobListener] | None = None):
        self.settings = settings
        self.catalog = Catalog(settings.backup_dir)
        self.offsite = Offsite(settings, self.catalog)  # S3 copies, age encryption, tiered retention
        self.lock = JobLock(settings.backup_dir)
        self.listeners: list[JobListener] = list(listeners or [])
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.current: Job | None = None
        self.cancel = threading.Event()
        self.draining = False  # a long-running sidecar is stopping: no follow-up jobs

    def new_job(self, kind: str, trigger: str = "manual", **params: Any) -> Job:
        job = Job(kind=kind, trigger=trigger, params=params)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOB_RECORDS:
            self.jobs.popitem(last=False)
        return job

    def check_backup_dir(self) -> None:
        """The directory precheck, as a job failure (stage write) that is recorded like any other."""
        try:
            check_backup_dir(self.settings)
        except ConfigError as exc:
            raise JobFailed(str(exc), "write") from None

    @contextlib.contextmanager
    def running(self, job: Job, *, within: Job | None = None, precheck: bool = True) -> Iterator[Job]:
        """Run ``job`` under the lock (or inside ``within``, the job that holds it), tell the
        listeners, and record the outcome whatever happens, a refused precheck included.

        ``precheck=False``: the job checks the backup directory itself (a backup does, once its
        catalog entry exists, so that the refusal is in the catalog too).
        """
        job.started_at = iso_utc(clock.now())
        locked = within is not None or self._acquire(job)
        if within is None:
            self.current = job
        job.state = "running"
        log.info("%s job %s started (%s)", job.kind, job.id, job.trigger, extra={"job_id": job.id})
        self._notify("job_started", job)
        try:
            if precheck or not locked:
                self.check_backup_dir()
            if not locked:
                raise JobFailed(f"cannot take the job lock {self.lock.path}", "write")
            yield job
            job.state = "succeeded"
        except JobFailed as exc:
            job.state, job.error, job.stage = "failed", str(exc), exc.stage
            raise
        except Exception as exc:
            job.state, job.error, job.stage = "failed", f"unexpected error: {exc}", job.stage or "dump"
            raise JobFailed(job.error, job.stage) from exc
        except BaseException:  # KeyboardInterrupt, SystemExit: still a failed job in the records
            job.state, job.error = "failed", "interrupted"
            raise
        finally:
            job.finished_at = iso_utc(clock.now())
            if within is None:
                self.current = None
                self.lock.release()
            level = outcome_level(job)
            suffix = f": {job.error}" if job.error else ""
            log.log(level, "%s job %s %s%s", job.kind, job.id, job.state, suffix, extra={"job_id": job.id})
            self._notify("job_finished", job)

    def _acquire(self, job: Job) -> bool:
        """The lock, or False when the directory cannot hold it (the job then fails, recorded);
        JobBusy passes through: another job runs, and this one never started."""
        with contextlib.suppress(OSError):
            self.settings.backup_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(job)
        except OSError:
            return False
        return True

    def writing(self, job: Job) -> None:
        """``job`` has passed the checks it makes before writing and is about to write."""
        job.writing = True
        self._notify("job_writing", job)

    def _notify(self, event: str, job: Job) -> None:
        for listener in self.listeners:
            tell = getattr(listener, event, None)
            if tell is None:
                continue
            try:
                tell(job)
            except Exception:  # a broken listener must not fail the job
                log.exception("listener %r failed on %s", listener, event)
