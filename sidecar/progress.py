"""A one-line progress display for CLI jobs on a terminal: namespaces, documents, bytes."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from sidecar.jobs import Job


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


class TerminalProgress:
    """Redraws the job's progress a few times a second while the job runs; silent when not a TTY."""

    def __init__(
        self, job: Job, *, enabled: bool = True, stream: TextIO | None = None, interval: float = 0.25
    ):
        self.job, self.stream, self.interval = job, stream or sys.stderr, interval
        self.enabled = enabled and self.stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _line(self) -> str:
        p = self.job.progress
        total, done = p.get("namespacesTotal", 0), p.get("namespacesDone", 0)
        width = 24
        filled = int(width * done / total) if total else 0
        return (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} namespaces  "
            f"{p.get('documents', 0):,} documents  {_mb(p.get('bytes', 0))}"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write(self._line())
            self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.stream.write(self._line() + "\n")
            self.stream.flush()
