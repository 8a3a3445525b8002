"""The one progress type every job reports through, and its one-line display for CLI jobs.

Engines (dump, restore, scan, replay) are handed the job's ``Progress`` and update it in place from
their worker thread; readers (the API's job view, the terminal line, the job metrics) only look at it.

A pass that knows its planned total (the replay: oplog entries; a restore's writes: the archive's
documents and bytes) starts with ``begin(phase, unit=..., total=...)`` and calls ``advance(count,
position)`` as work is done (the replay per applied batch, with the newest applied entry's ``ts``);
readers get the ratio, the rate (since the pass began), an ETA and the point in time reached.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from bson.timestamp import Timestamp

from sidecar.text import counted, iso_utc


@dataclass
class Progress:
    phase: str = ""  # what the job is doing now: dump, oplog, upload, verify, documents, indexes...
    namespaces_total: int = 0
    namespaces_done: int = 0
    documents: int = 0
    bytes: int = 0
    scope: str = ""  # set by a job that runs another's steps: "drill" shows as drill-documents
    notes: list[str] = field(default_factory=list)  # warnings for the operator now (the CLI prints them)
    unit: str = ""  # what done/total count in this pass (entries, documents); "" when it has no total
    done: int = 0
    total: int = 0  # planned for this pass
    bytes_total: int = 0  # the archive's, for a restore's writes (0: not known)
    position: Timestamp | None = None  # the newest oplog entry applied (the replay)
    started: float = 0.0
    finished: float | None = None  # when done reached total: the rate of a finished pass stays put
    now: Callable[[], float] = field(default=time.monotonic, repr=False)  # tests pass their own

    def begin(self, phase: str, namespaces_total: int = 0, *, unit: str = "", total: int = 0) -> None:
        """A new pass over the data: the counters start again."""
        self.phase, self.namespaces_total = phase, namespaces_total
        self.namespaces_done = self.documents = self.bytes = self.done = self.bytes_total = 0
        self.unit, self.total, self.position, self.finished = unit, total, None, None
        self.started = self.now()

    def count(self, unit: str, total: int, bytes_total: int = 0) -> None:
        """From now on this pass counts ``unit`` toward ``total`` (its rate measured from now)."""
        self.unit, self.total, self.bytes_total, self.done, self.finished = unit, total, bytes_total, 0, None
        self.started = self.now()

    def advance(self, count: int, position: Timestamp | None = None) -> None:
        """``count`` more of the pass's unit done; ``position``: the newest oplog entry applied."""
        self.done += count
        if position is not None:
            self.position = position
        if self.total and self.done >= self.total and self.finished is None:
            self.finished = self.now()

    @property
    def shown_phase(self) -> str:
        return f"{self.scope}-{self.phase}" if self.scope and self.phase else self.phase

    @property
    def rate(self) -> float | None:
        """Units per second since the pass began (None before the first)."""
        elapsed = (self.finished if self.finished is not None else self.now()) - self.started
        return self.done / elapsed if self.done and elapsed > 0 else None

    @property
    def ratio(self) -> float | None:
        return min(self.done / self.total, 1.0) if self.total else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far."""
        rate = self.rate
        return max(self.total - self.done, 0) / rate if self.total and rate else None

    def as_json(self) -> dict[str, Any]:
        rate, eta = self.rate, self.eta
        return {
            "phase": self.shown_phase or None,
            "namespacesTotal": self.namespaces_total,
            "namespacesDone": self.namespaces_done,
            "documents": self.documents,
            "bytes": self.bytes,
            "unit": self.unit or None,
            "done": self.done,
            "total": self.total,
            "bytesTotal": self.bytes_total,
            "ratio": round(self.ratio, 4) if self.ratio is not None else None,
            "ratePerSecond": round(rate, 1) if rate is not None else None,
            "etaSeconds": round(eta, 1) if eta is not None else None,
            "pointReached": position_json(self.position),
        }


def position_json(ts: Timestamp | None) -> dict[str, Any] | None:
    if ts is None:
        return None
    return {"t": ts.time, "i": ts.inc, "time": iso_utc(dt.datetime.fromtimestamp(ts.time, dt.UTC))}


def clock_text(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
        self._noted = self._drawn = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _line(self) -> str:
        p = self.progress
        phase = f"  {p.shown_phase:<16}" if p.shown_phase else ""  # padded: a shorter one overwrites
        if p.total:
            return f"\r{bar(p.done, p.total)} {counted_pass(p)}{phase}"
        total, done = p.namespaces_total, p.namespaces_done
        return (
            f"\r{bar(done, total)} {done}/{total} namespaces  "
            f"{counted(p.documents, 'document')}  {p.bytes / 1e6:,.1f} MB{phase}"
        )

    def _notes(self) -> None:
        """The job's new warnings, each on a line of its own above the progress line."""
        while self._noted < len(self.progress.notes):
            clear = "\r\033[K" if self.enabled else ""
            self.stream.write(f"{clear}warning: {self.progress.notes[self._noted]}\n")
            self._noted += 1
        self.stream.flush()

    def _draw(self, end: str = "") -> None:
        """The line, padded over what is left of a longer one before it (the documents' line, say)."""
        line = self._line()
        self.stream.write(line.ljust(self._drawn) + end)
        self.stream.flush()
        self._drawn = len(line)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._notes()
            if self.enabled:
                self._draw()

    def __enter__(self) -> TerminalProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._notes()
        if self.enabled:
            self._draw("\n")


def bar(done: int, total: int, width: int = 24) -> str:
    filled = min(int(width * done / total), width) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def counted_pass(p: Progress) -> str:
    """``1,234/20,000 entries  812/s  ETA 0:23  at 2026-12-08T00:10:03.000Z`` (the MB too, for a
    restore's writes)."""
    parts = [f"{p.done:,}/{p.total:,} {p.unit}"]
    if p.bytes_total:
        parts.append(f"{p.bytes / 1e6:,.1f}/{p.bytes_total / 1e6:,.1f} MB")
    rate, eta = p.rate, p.eta
    parts.append(f"{rate:,.0f}/s" if rate is not None else "-/s")
    parts.append(f"ETA {clock_text(eta)}" if eta is not None else "ETA -")
    if p.position is not None:
        parts.append(f"at {position_json(p.position)['time']}")  # type: ignore[index]
    return "  ".join(parts)
