"""Job records and the cross-process single-flight lock that every backup/verify/restore/prune takes."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.progress import Progress

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
        self._handle = None
        self._mutex = threading.Lock()

    def acquire(self, job: Job) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            raise JobBusy(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"id": job.id, "kind": job.kind, "pid": os.getpid(), "startedAt": job.started_at})
        )
        handle.flush()
        with self._mutex:
            self._handle = handle

    def release(self) -> None:
        with self._mutex:
            handle, self._handle = self._handle, None
        if handle is not None:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
