"""The health file of ``sidecar pitr stream --health-file`` and its exec probe, ``sidecar pitr probe``.

``pitr stream`` has no HTTP server: it rewrites the file every ``BEAT_SECONDS`` with the archiver's
state and removes it on exit. The probe reads it: a file older than ``--max-age`` means a hung or
stopped process (liveness); ``--ready`` also asks that the archiver tails now, not stands by behind
another archiver of the same directory nor waits to restart after a failure (readiness).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from sidecar import clock
from sidecar.pitr.capture.state import PitrState

log = logging.getLogger("sidecar.pitr")

BEAT_SECONDS = 5.0


def write_health(path: Path, state: PitrState, redact: Callable[[str], str]) -> None:
    """Replace ``path`` atomically with the archiver's state now (its error passed through ``redact``)."""
    with state.lock:
        body = {
            "time": clock.timestamp(),
            "pid": os.getpid(),
            "running": state.running,
            "error": redact(state.error) if state.error else None,
            "lastTimestamp": state.last_timestamp,
        }
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(body), encoding="utf-8")
    os.replace(scratch, path)


def beat(path: Path, state: PitrState, redact: Callable[[str], str]) -> None:
    """``write_health`` from the running stream: a failed write is logged, the archiver goes on (and the
    probe, seeing an old file, reports it)."""
    try:
        write_health(path, state, redact)
    except OSError as exc:
        log.error("cannot write the health file %s: %s", path, exc)


def health_problem(path: Path, max_age: float, ready: bool) -> str | None:
    """Why the probe fails, or None when it passes."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no health file {path}: sidecar pitr stream --health-file is not running"
    except (OSError, ValueError) as exc:
        return f"cannot read the health file {path}: {exc}"
    age = clock.timestamp() - float(body.get("time", 0))
    if age > max_age:
        return f"health file {path} is {age:.0f}s old (over {max_age:g}s): the archiver process hangs"
    if ready and not body.get("running"):
        return f"oplog archiver not tailing: {body.get('error') or 'starting'}"
    return None
