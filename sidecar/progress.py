"""The one progress type every job reports through, and its one-line display for CLI jobs.

Engines (dump, restore, scan) are handed the job's ``Progress`` and update it in place from their
worker thread; readers (the API's job view, the terminal line) only look at it.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any, TextIO

from sidecar.text import counted


@dataclass
class Progress:
    phase: str = ""  # what the job is doing now: dump, oplog, upload, verify, documents, indexes...
    namespaces_total: int = 0
    namespaces_done: int = 0
    documents: int = 0
    bytes: int = 0
    scope: str = ""  # set by a job that runs another's steps: "drill" shows as drill-documents
    notes: list[str] = field(default_factory=list)  # warnings for the operator now (the CLI prints them)

    def begin(self, phase: str, namespaces_total: int = 0) -> None:
        """A new pass over the data: the counters start again."""
        self.phase, self.namespaces_total = phase, namespaces_total
        self.namespaces_done = self.documents = self.bytes = 0

    @property
    def shown_phase(self) -> str:
        return f"{self.scope}-{self.phase}" if self.scope and self.phase else self.phase

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.shown_phase or None,
            "namespacesTotal": self.namespaces_total,
            "namespacesDone": self.namespaces_done,
            "documents": self.documents,
            "bytes": self.bytes,
        }


class TerminalProgress:
    """Redraws a progress line a few times a second while the job runs; silent when not a TTY."""

    def __init__(
        self,
        progress: Progress,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 0.25,
    ):
        self.progress, self.stream, self.interval = progress, stream or sys.stderr, interval
        self.enabled = enabled and self.stream.isatty()  # the line; the notes are printed in any case
        self._noted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _line(self) -> str:
        p = self.progress
        total, done = p.namespaces_total, p.namespaces_done
        width = 24
        filled = int(width * done / total) if total else 0
        phase = f"  {p.shown_phase:<16}" if p.shown_phase else ""  # padded: a shorter one overwrites
        return (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} namespaces  "
            f"{counted(p.documents, 'document')}  {p.bytes / 1e6:,.1f} MB{phase}"
        )

    def _notes(self) -> None:
        """The job's new warnings, each on a line of its own above the progress line."""
        while self._noted < len(self.progress.notes):
            clear = "\r\033[K" if self.enabled else ""
            self.stream.write(f"{clear}warning: {self.progress.notes[self._noted]}\n")
            self._noted += 1
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._notes()
            if self.enabled:
                self.stream.write(self._line())
                self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._notes()
        if self.enabled:
            self.stream.write(self._line() + "\n")
            self.stream.flush()
