"""``backup-info.json``: the record of what exists. A JSON array, oldest first, newest last.

Each entry is a superset of the runbook's ``{fileName, fileSize, createdAt, status}``. Writes are
atomic (temp file, fsync, rename) under an exclusive file lock, so a sidecar and a CronJob can share
the directory, and a crash leaves the previous catalog intact.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.store.jsonfile import LockedJsonFile, fsync_dir

__all__ = ["fsync_dir"]  # imported from here by the archive writers

CATALOG_NAME = "backup-info.json"
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
PARTIAL_SUFFIX = ".partial"
SAFETY_TRIGGER = "pre-restore"  # the trigger of safety backups taken before a restore

Entry = dict[str, Any]


class CatalogError(RuntimeError):
    pass


def human_size(size: int) -> str:
    """The runbook's ``fileSize`` style: ``15.2MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def iso_utc(moment: dt.datetime) -> str:
    """``2024-12-01T02:00:00.000Z``: ISO-8601 UTC with milliseconds, as the runbook shows."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def archive_name(prefix: str, moment: dt.datetime) -> str:
    """``{prefix}-{YYYY-MM-DDTHH-mm-ss}.gz`` with the UTC time."""
    return f"{prefix}-{moment.astimezone(dt.UTC):%Y-%m-%dT%H-%M-%S}.gz"


def archive_name_pattern(prefix: str) -> re.Pattern[str]:
    # ``.gz.age`` when encrypted (SIDECAR_AGE_RECIPIENTS)
    return re.compile(re.escape(prefix) + r"-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.gz(\.age)?")


@dataclass
class Reconciliation:
    """How the directory and the catalog disagree. Reported, never silently fixed."""

    missing: list[str] = field(default_factory=list)  # completed in the catalog, file absent
    stray: list[str] = field(default_factory=list)  # archive-named files the catalog does not know
    partial: list[str] = field(default_factory=list)  # leftovers of interrupted writes

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stray or self.partial)

    def as_json(self) -> dict[str, list[str]]:
        return {"missing": self.missing, "stray": self.stray, "partial": self.partial}


class Catalog:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / CATALOG_NAME
        self._file = LockedJsonFile(self.path, CatalogError)

    def load(self) -> list[Entry]:
        data = self._file.read([])
        if not isinstance(data, list) or not all(isinstance(e, dict) and "fileName" in e for e in data):
            raise CatalogError(f"{self.path} must be a JSON array of entries with a fileName")
        return data

    def _save(self, entries: list[Entry]) -> None:
        self._file.write(entries)

    def update(self, change: Callable[[list[Entry]], Any]) -> Any:
        """Load, apply ``change`` to the list in place, save atomically; all under the file lock."""
        with self._file.locked():
            entries = self.load()
            result = change(entries)
            self._save(entries)
            return result

    def add(self, entry: Entry) -> None:
        self.update(lambda entries: entries.append(entry))

    def patch(self, file_name: str, **fields: Any) -> Entry:
        def change(entries: list[Entry]) -> Entry:
            entry = find_entry(entries, file_name)
            if entry is None:
                raise CatalogError(f"{file_name} is not in the catalog")
            entry.update(fields)
            return dict(entry)

        return self.update(change)

    def get(self, file_name: str) -> Entry | None:
        return find_entry(self.load(), file_name)

    def reconcile(self, prefix: str) -> Reconciliation:
        entries = self.load()
        known = {e["fileName"] for e in entries}
        present = {p.name for p in self.directory.iterdir() if p.is_file()}
        pattern = archive_name_pattern(prefix)
        return Reconciliation(
            missing=sorted(
                e["fileName"]
                for e in entries
                if e.get("status") == STATUS_COMPLETED
                and e["fileName"] not in present
                and "local" in e.get("locations", ["local"])
            ),
            stray=sorted(n for n in present if pattern.fullmatch(n) and n not in known),
            partial=sorted(n for n in present if n.endswith(PARTIAL_SUFFIX)),
        )


def find_entry(entries: list[Entry], file_name: str) -> Entry | None:
    return next((e for e in reversed(entries) if e["fileName"] == file_name), None)


def is_full_backup(entry: Entry) -> bool:
    """A completed regular backup, not the partial safety copy a restore takes of what it overwrites."""
    return entry.get("status") == STATUS_COMPLETED and entry.get("trigger") != SAFETY_TRIGGER


def full_backups(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if is_full_backup(e)]
