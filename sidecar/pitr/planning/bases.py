"""The base backups the archive joins: their consistent points, read from ``backup-info.json``.

A base backup dumped with ``--oplog`` on a replica set records ``oplog: {start, end, entries}``; it
restores to ``end`` (its consistent point), and replaying the archived entries after ``end`` carries it
forward. Its collections were read after ``start``: replaying every entry after ``start`` over them
(idempotent, as oplog application is) brings them to a consistent point too.
"""

from __future__ import annotations

from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.store.catalog import Catalog, is_usable


def base_ranges(settings: Settings) -> list[tuple[str, Timestamp, Timestamp]]:
    """(file name, oplog start, consistent point) of the usable full backups (``is_usable``) that
    recorded their oplog cut, in catalog order (oldest first)."""
    out = []
    for entry in Catalog(settings.backup_dir).load():
        cut = entry.get("oplog") or {}
        if is_usable(entry) and cut.get("end"):
            end = optime.from_json(cut["end"])
            out.append((entry["fileName"], optime.from_json(cut["start"]) if cut.get("start") else end, end))
    return out


def base_backups(settings: Settings) -> list[tuple[str, Timestamp]]:
    """(file name, consistent point) of the usable full backups, oldest first."""
    return [(name, end) for name, _, end in base_ranges(settings)]
