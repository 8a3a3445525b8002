"""The base backups the archive joins: their consistent points, read from ``backup-info.json``.

A base backup dumped with ``--oplog`` on a replica set records ``oplog: {start, end, entries}``; it
restores to ``end`` (its consistent point), and replaying the archived entries after ``end`` carries it
forward.
"""

from __future__ import annotations

from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.store.catalog import Catalog, is_usable


def base_backups(settings: Settings) -> list[tuple[str, Timestamp]]:
    """(file name, consistent point) of the usable full backups (``is_usable``) that recorded their
    oplog cut, in catalog order (oldest first)."""
    return [
        (entry["fileName"], optime.from_json(entry["oplog"]["end"]))
        for entry in Catalog(settings.backup_dir).load()
        if is_usable(entry) and (entry.get("oplog") or {}).get("end")
    ]
