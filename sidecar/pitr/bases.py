"""The base backups the archive joins: their consistent points, read from ``backup-info.json``.

A base backup dumped with ``--oplog`` on a replica set records ``oplog: {start, end, entries}``; it
restores to ``end`` (its consistent point), and replaying the archived entries after ``end`` carries it
forward.
"""

from __future__ import annotations

from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.store.catalog import SAFETY_TRIGGER, STATUS_COMPLETED, Catalog


def base_backups(settings: Settings) -> list[tuple[str, Timestamp]]:
    """(file name, consistent point) of the completed full backups that recorded their oplog cut and
    whose newest integrity test did not fail, in catalog order (oldest first)."""
    points = []
    for entry in Catalog(settings.backup_dir).load():
        end = (entry.get("oplog") or {}).get("end")
        failed = (entry.get("lastVerification") or {}).get("ok") is False
        full = entry.get("status") == STATUS_COMPLETED and entry.get("trigger") != SAFETY_TRIGGER
        if full and end and not failed:
            points.append((entry["fileName"], optime.from_json(end)))
    return points
