"""Job records and the cross-process single-flight lock that every backup/verify/restore/prune takes."""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.progress import Progress
from sidecar.store.filelock import FileLock

LOCK_NAME = ".sidecar-job.lock"


class JobBusy(RuntimeError):
    """Another job holds the lock; ``holder`` describes it (job id, kind, pid, since)."""

    def __init__(self, holder: dict[str, Any]):
        self.holder = holder
        super().__init__(
            f"another {holder.get('kind', 'job')} is running (job {holder.get('id', '?')}, "
            f"pid {holder.get('pid', '?')}, since {holder.get('startedAt', '?')})"
        )


@dataclass
class Job:
    kind: str  # backup, verify, restore, prune
    trigger: str  # schedule, manual, cronjob, pre-restore
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"  # queued, running, succeeded, failed
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress = field(default_factory=Progress)
    result: dict[str, Any] | None = None
    error: str | None = None
    stage: str | None = None  # the step running now; on a failed job, the step that failed
    params: dict[str, Any] = field(default_factory=dict)
    writing: bool = False  # past its checks, it has begun to write (a restore's refusals come before)

    def as_json(self) -> dict[str, Any]:
        """The job as the API shows it; safe to call while the worker thread still changes it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "trigger": self.trigger,
            "state": self.state,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "progress": self.progress.as_json(),
            "params": snapshot(self.params),
            "result": snapshot(self.result),
            "error": self.error,
            "failedStage": self.stage if self.state == "failed" else None,
        }


def snapshot(value: Any) -> Any:
    """A deep copy of JSON-like data that another thread may be changing.

    ``dict.copy()`` and ``list.copy()`` run without releasing the GIL, so each level is copied whole
    before it is walked; iterating the live containers (as ``dataclasses.asdict`` does) can raise
    "dictionary changed size during iteration".
    """
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.copy().items()}
    if isinstance(value, list | tuple):
        return [snapshot(item) for item in list(value)]
    return value


class JobLock:
    """An exclusive flock on a file in the backup directory, shared by every process using it.

    The holder's description is written into the file so a refused caller can say who is running.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self._held: FileLock | None = None
        self._mutex = threading.Lock()

    def acquire(self, job: Job) -> None:
        lock = FileLock(self.path)
        if not lock.acquire(wait=False):
            try:
                holder = json.loads(lock.holder() or "{}")
            except ValueError:
                holder = {}
            raise JobBusy(holder)
        lock.record(
            json.dumps({"id": job.id, "kind": job.kind, "pid": os.getpid(), "startedAt": job.started_at})
        )
        with self._mutex:
            self._held = lock

    def release(self) -> None:
        with self._mutex:
            lock, self._held = self._held, None
        if lock is not None:
            lock.record("")
            lock.release()
