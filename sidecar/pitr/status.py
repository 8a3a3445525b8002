"""The state of the oplog archive for people and machines: ``sidecar pitr status``, ``GET
/api/backup/pitr`` and the gauges. Reads the two catalogs and checks the slice files (their size; with
``deep``, their sha256 too), then lets ``chain`` find the gaps and windows.
"""

from __future__ import annotations

from typing import Any

import pymongo
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.config import Settings
from sidecar.engine.client import mongo_client
from sidecar.engine.replay.engine import through_second
from sidecar.engine.restore_errors import error_text
from sidecar.pitr import optime
from sidecar.pitr.capture.presence import caught_up_epoch, presence
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.capture.tailer import OplogWindow, oplog_window
from sidecar.pitr.planning.bases import base_backups
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.chain import DAMAGED, MISSING, Chain, analyse
from sidecar.pitr.record.slice_check import check_slice
from sidecar.pitr.record.slices import SliceEntry, oplog_dir, slice_source
from sidecar.store.objects import LOCAL
from sidecar.store.retention import locations
from sidecar.time_input import parse_iso


def slice_problems(settings: Settings, slices: list[SliceEntry], deep: bool = False) -> dict[str, str]:
    """Slice file name -> what is wrong with it (``slice-missing``, or how it is damaged). A slice
    whose local copy retention removed is taken from the bucket when ``deep``, else trusted there.
    ``deep`` checks the content (record/slice_check.py), not only the size."""
    directory = oplog_dir(settings)
    problems = {}
    for entry in slices:
        path = directory / entry["fileName"]
        local = LOCAL in locations(entry)
        try:
            size = path.stat().st_size if local else entry["sizeBytes"]
        except FileNotFoundError:
            problems[entry["fileName"]] = MISSING
            continue
        if size != entry["sizeBytes"]:
            problems[entry["fileName"]] = f"{DAMAGED}: {size} bytes, the catalog says {entry['sizeBytes']}"
        elif deep and (problem := check_slice(slice_source(settings, path, entry), entry)):
            problems[entry["fileName"]] = f"{DAMAGED}: {problem}"
    return problems


def caught_up_position(settings: Settings) -> Timestamp | None:
    """Through which oplog position every entry is stored, by the archiver's recorded caught-up time
    (its presence file, so any process knows it): every whole second before that time."""
    epoch = caught_up_epoch(oplog_dir(settings))
    return through_second(int(epoch) - 1) if epoch is not None and epoch >= 1 else None


def chain_of(settings: Settings, deep: bool = False) -> tuple[dict[str, Any], Chain]:
    document = SliceCatalog(oplog_dir(settings)).load()
    problems = slice_problems(settings, document["slices"], deep)
    return document, analyse(document, problems, base_backups(settings), caught_up_position(settings))


def _newest_time(slices: list[SliceEntry]) -> float | None:
    if not slices:
        return None
    wall = slices[-1].get("lastWall")
    return parse_iso(wall).timestamp() if wall else float(slices[-1]["last"]["t"])


def refresh(settings: Settings, state: PitrState) -> Chain:
    """Recompute the gauges' chain facts (blocking: a worker thread, never a scrape)."""
    with state.refreshing:
        document, chain = chain_of(settings)
        newest = chain.segments[-1] if chain.segments else None
        current = [w for w in chain.windows if newest is not None and w.last_entry == newest.last]
        with state.lock:
            state.gaps = len(chain.gaps)
            state.window_start = float(current[0].start.time) if current else 0.0
            if document["slices"] and state.last_position is None:
                state.last_position = optime.from_json(document["slices"][-1]["last"])
    return chain


def server_window(settings: Settings) -> OplogWindow | str:
    """The server's own oplog window, or why it cannot be read (one line, no topology dump)."""
    try:
        with mongo_client(settings.mongodb_uri, settings.connect_timeout_seconds, "status") as client:
            return oplog_window(client)
    except pymongo.errors.PyMongoError as exc:
        return f"{type(exc).__name__}: {error_text(exc)}"


def pitr_status(
    settings: Settings,
    *,
    deep: bool = False,
    state: PitrState | None = None,
    server: OplogWindow | str | None = None,
) -> dict[str, Any]:
    """Everything about the archive; ``server`` defaults to a fresh read of the server's window."""
    document, chain = chain_of(settings, deep)
    slices = document["slices"]
    newest = _newest_time(slices)
    server = server_window(settings) if server is None else server
    return {
        "mode": settings.pitr,
        "directory": str(oplog_dir(settings)),
        "archiver": _archiver(settings, state),
        "slices": {
            "count": len(slices),
            "entries": sum(s["entries"] for s in slices),
            "sizeBytes": sum(s["sizeBytes"] for s in slices),
            "rawBytes": sum(s["rawBytes"] for s in slices),
            "leftOutEntries": sum(s.get("leftOut", 0) for s in slices),  # the proofs' scratch writes
            "first": slices[0]["first"] if slices else None,
            "last": slices[-1]["last"] if slices else None,
            "firstTime": slices[0].get("firstWall") if slices else None,
            "lastTime": slices[-1].get("lastWall") if slices else None,
            "checked": "content" if deep else "size",
        },
        "lagSeconds": round(clock.timestamp() - newest, 3) if newest is not None else None,
        "windows": [w.as_json() for w in chain.windows],
        "gaps": [g.as_json() for g in chain.gaps],
        "verification": document.get("verification", {}),  # the newest pitr check (integrity/pitr.py)
        "serverOplog": server.as_json() if isinstance(server, OplogWindow) else {"error": server},
    }


def _archiver(settings: Settings, state: PitrState | None) -> dict[str, Any]:
    """From the lock and the presence file (any process); with ``state``, this process's own archiver's
    counters too, and whether it (rather than another process) tails now."""
    seen = presence(oplog_dir(settings))
    if state is None:
        return seen
    with state.lock:
        return seen | {
            "enabled": state.enabled,
            "running": state.running or seen["running"],
            "here": state.running,
            "slices": dict(state.slices),
            "rollovers": state.rollovers,
            "leftOut": state.left_out,
            "error": state.error,
        }
