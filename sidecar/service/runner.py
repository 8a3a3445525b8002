"""Running service jobs from the event loop: ``JobRunner`` hands the blocking work to a worker
thread, keeps one job at a time (the service's lock is the final word, also across processes), and
stops taking jobs on shutdown. The HTTP API and the scheduler both start jobs through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sidecar import clock
from sidecar.jobs import Job, JobBusy
from sidecar.logs import JOB_ID
from sidecar.text import iso_utc

if TYPE_CHECKING:
    from sidecar.service import BackupService

log = logging.getLogger("sidecar.runner")


class ShuttingDown(RuntimeError):
    """The sidecar is stopping and takes no new jobs."""


class JobRunner:
    """Starts service jobs in worker threads; one at a time; drains and cancels on shutdown."""

    def __init__(self, service: BackupService):
        self.service = service
        self.accepting = True
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self._task_job: Job | None = None  # the job whose task owns the runner, queued or running
        self._ready: dict[str, tuple[str, asyncio.Event]] = {}  # job id -> the event submit() awaits
        self._loop: asyncio.AbstractEventLoop | None = None
        service.listeners.append(self)

    # -- JobListener: learn from the worker thread when a job holds the lock or starts writing --------

    def job_started(self, job: Job) -> None:
        self._reached("job_started", job)

    def job_writing(self, job: Job) -> None:
        self._reached("job_writing", job)

    def job_finished(self, job: Job) -> None:
        pass

    def _reached(self, milestone: str, job: Job) -> None:
        awaited, event = self._ready.get(job.id, ("", None))
        if awaited == milestone and event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(event.set)

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
        self, kind: str, trigger: str, work: Callable[[Job], Any], *, until: str = "started", **params: Any
    ) -> tuple[Job, asyncio.Task[Any]]:
        """Start ``work(job)`` in a thread; return once it holds the lock (``until="started"``) or has
        passed its checks and starts writing (``until="writing"``), or has already ended.

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
        ready = asyncio.Event()
        self._ready[job.id] = (f"job_{until}", ready)
        task = asyncio.create_task(self._run(job, work), name=f"{kind}-{job.id}")
        self.tasks[job.id] = task
        task.add_done_callback(self._done)
        waiter = asyncio.create_task(ready.wait())
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
                job.finished_at = iso_utc(clock.now())
            raise
        finally:
            JOB_ID.reset(token)
            self._ready.pop(job.id, None)
            if self._task_job is job:
                self._task_job = None

    def _done(self, task: asyncio.Task[Any]) -> None:
        for job_id, known in list(self.tasks.items()):
            if known is task:
                del self.tasks[job_id]
        if not task.cancelled():
            task.exception()  # retrieved here; the job record holds the outcome

    # -- shutdown --------------------------------------------------------------------------------

    async def drain(self, grace: float) -> bool:
        """Stop taking jobs; let running ones finish within ``grace`` seconds, then cancel them.

        Returns True when every job ended by itself, False when the cancel Event had to be set.
        """
        self.accepting = False
        self.service.draining = True  # no follow-up jobs (the integrity test after a backup)
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
