"""What the archiver and the last chain check know, kept in memory for metrics and status (no I/O)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bson.timestamp import Timestamp

from sidecar.pitr.capture.tailer import OplogWindow


@dataclass
class PitrState:
    enabled: bool | None = None  # SIDECAR_PITR resolved against the server (None: not yet)
    running: bool = False  # an archiver loop is tailing now
    # another process archives this directory: the RPO is its to export (this one's would not move)
    standing_by: bool = False
    last_position: Timestamp | None = None  # newest entry safely stored
    caught_up: float = 0.0  # epoch s: every entry the server wrote before it was stored (see below)
    slices: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})
    rollovers: int = 0  # gaps this process found on resume
    left_out: int = 0  # entries of the proofs' scratch databases the archiver did not store
    gaps: int = 0  # gaps in the archive, from the last chain check
    window_start: float = 0.0  # start (epoch s) of the window that reaches the newest entry; 0 = none
    server_window: OplogWindow = field(default_factory=OplogWindow)
    error: str | None = None  # why the archiver last stopped or failed
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # held by ``status.refresh`` over its read and write: of two refreshes (the archiver's after a slice, the
    # metrics' after a job) the one that read the newer catalogs writes last
    refreshing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def last_timestamp(self) -> float:
        return float(self.last_position.time) if self.last_position else 0.0

    @property
    def caught_up_timestamp(self) -> float:
        """The newest time T such that every entry the server wrote before T is stored (or lost in a
        recorded gap): the newest stored entry's, or later when the tail, idle, had read everything.
        ``time() - T`` is the RPO now, on an idle server as on a busy one."""
        return max(self.caught_up, self.last_timestamp)

    def mark_caught_up(self, at: float) -> None:
        with self.lock:
            self.caught_up = max(self.caught_up, at)
