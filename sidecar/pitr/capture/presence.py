"""The archiver's presence file, ``oplog/.archiver-state.json``, beside its lock: what any process (``sidecar
pitr status`` in a shell, the API of another container) can learn about the archiver of a directory.

The archiver holding the lock rewrites it when it starts, after each slice, every ``PRESENCE_SECONDS``
while it tails an idle server (its caught-up time moves), and when it stops (with the error that stopped
it). Whether an archiver runs *now* is the lock's to say (a killed process leaves its file behind);
the file says since when, the last error, and up to when everything is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from sidecar import clock
from sidecar.pitr.capture.cut import archiver_running
from sidecar.pitr.capture.state import PitrState
from sidecar.text import iso_utc

PRESENCE_FILE = ".archiver-state.json"
PRESENCE_SECONDS = 5.0


def _iso(epoch: float | None) -> str | None:
    return iso_utc(dt.datetime.fromtimestamp(epoch, dt.UTC)) if epoch else None


def write_presence(directory: Path, state: PitrState, since: float, error: str | None) -> None:
    """Replace the file atomically with the archiver's state now (``error`` already redacted)."""
    with state.lock:
        body = {
            "pid": os.getpid(),
            "running": state.running,
            "since": _iso(since),
            "updated": _iso(clock.timestamp()),
            "lastError": error,
            "caughtUp": _iso(state.caught_up_timestamp),
            "caughtUpEpoch": state.caught_up_timestamp or None,
        }
    scratch = directory / f".{PRESENCE_FILE}.{os.getpid()}.tmp"
    scratch.write_text(json.dumps(body), encoding="utf-8")
    os.replace(scratch, directory / PRESENCE_FILE)


def caught_up_epoch(directory: Path) -> float | None:
    """The caught-up time (epoch s) the archiver last recorded: every entry the server wrote before
    it is stored, or lost in a gap the catalog records. None: never recorded, or unreadable."""
    try:
        body = json.loads((Path(directory) / PRESENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = body.get("caughtUpEpoch") if isinstance(body, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pid_alive(pid: Any) -> bool:
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def presence(directory: Path) -> dict[str, Any]:
    """What ``pitr status`` says of the archiver: running (its lock is held), its pid, since when,
    the last error, caught-up time and the RPO (seconds since then); ``None`` for what is unknown."""
    try:
        body = json.loads((Path(directory) / PRESENCE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        body = {}
    except (OSError, ValueError) as exc:
        body = {"lastError": f"cannot read {PRESENCE_FILE}: {exc}"}
    locked = archiver_running(directory)
    running = locked and body.get("running") is True  # locked alone: starting, not tailing yet
    caught_up = body.get("caughtUpEpoch")
    return {
        "running": running,
        "locked": locked,
        "pid": body.get("pid"),
        # not archiving, but its process lives: it waits to restart (the server out of reach, say)
        "processAlive": locked or _pid_alive(body.get("pid")),
        "since": body.get("since"),
        "stoppedAt": None if locked else body.get("updated"),
        "lastError": body.get("lastError"),
        "caughtUp": body.get("caughtUp"),
        "rpoSeconds": round(clock.timestamp() - caught_up, 3) if caught_up else None,
    }
