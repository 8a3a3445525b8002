"""``backup-info.json``: the record of what exists. A JSON array, oldest first, newest last.

Each entry (``Entry``, a TypedDict: plain JSON) is a superset of the runbook's
``{fileName, fileSize, createdAt, status}``. ``newest_usable`` is the one answer to "which backup is the
latest good one", for ``--latest``, drills, status endpoints and metrics alike.

Writes are atomic (temp file, fsync, rename) under an exclusive file lock, so a sidecar and a CronJob
can share the directory, and a crash leaves the previous catalog intact.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Required, TypedDict

from sidecar.store.jsonfile import LockedJsonFile, fsync_dir

__all__ = ["fsync_dir"]  # imported from here by the archive writers

CATALOG_NAME = "backup-info.json"
PARTIAL_SUFFIX = ".partial"
SAFETY_TRIGGER = "pre-restore"  # the trigger of safety backups taken before a restore


class Status(StrEnum):
    """An entry's ``status``. A ``str``: it compares equal to, and is written to JSON as, its value."""

    RUNNING = "running"
    COMPLETED = "completed"  # the archive is written and renamed to its final name
    FAILED = "failed"  # no archive; ``error`` and ``failedStage`` say why


# the names other modules import (service, offsite, metrics); Status.X in new code
STATUS_RUNNING, STATUS_COMPLETED, STATUS_FAILED = Status.RUNNING, Status.COMPLETED, Status.FAILED


ARCHIVE_LEVELS = ("quick", "full", "drill")  # the levels of one archive's test (integrity/levels.py)
# pitr: the oplog archive replayed from one base backup to the next (integrity/pitr.py); on the newer
LEVELS = (*ARCHIVE_LEVELS, "pitr")


class LevelResult(TypedDict, total=False):
    """The newest result of one integrity test level (``verification[level]``), plus its details."""

    ok: Required[bool]
    at: Required[str]  # ISO-8601 UTC
    durationSeconds: float
    reason: str | None


class LastVerification(TypedDict):
    """The newest integrity test of any level: the one that decides whether an archive is usable."""

    level: str  # quick | full | drill
    ok: bool
    at: str


class Entry(TypedDict, total=False):
    """One element of ``backup-info.json``: a plain JSON object, read and written as such.

    The runbook's four fields are always there; the others appear as the backup gets them.
    """

    fileName: Required[str]
    fileSize: Required[str]  # human-readable, "15.2MB"
    createdAt: Required[str]  # ISO-8601 UTC with milliseconds
    status: Required[Status]  # read back from JSON as the equal plain str
    trigger: str  # schedule | manual | cronjob | pre-restore (SAFETY_TRIGGER)
    engine: str
    jobId: str
    locations: list[str]  # where copies live: "local", "s3"; absent on old entries = ["local"]
    sizeBytes: int
    sha256: str
    durationSeconds: float
    finishedAt: str
    serverVersion: str
    uncompressedBytes: int
    namespaces: dict[str, dict[str, Any]]  # ns -> documents, bytes, crc, type
    oplog: dict[str, Any] | None
    error: str
    failedStage: str
    verification: dict[str, LevelResult]  # level -> its newest result
    lastVerification: LastVerification
    remote: dict[str, dict[str, Any]]  # destination -> its copy: key, size, sha256, etag, uploadedAt
    uploadErrors: dict[str, dict[str, Any]]  # destination -> error, at, attempts (until it succeeds)


class CatalogError(RuntimeError):
    pass


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
                if e.get("status") == Status.COMPLETED
                and e["fileName"] not in present
                and "local" in e.get("locations", ["local"])
            ),
            stray=sorted(n for n in present if pattern.fullmatch(n) and n not in known),
            partial=sorted(n for n in present if n.endswith(PARTIAL_SUFFIX)),
        )


def find_entry(entries: list[Entry], file_name: str) -> Entry | None:
    return next((e for e in reversed(entries) if e["fileName"] == file_name), None)


def newest_test_passed(entry: Entry) -> bool | None:
    """Whether the archive's newest integrity test (any level) passed; None when it was never tested."""
    last = entry.get("lastVerification")
    return None if last is None else bool(last["ok"])


def is_usable(entry: Entry) -> bool:
    """A full backup to restore, drill or report as the last good one: completed, a regular backup (not
    the partial safety copy a restore takes of what it overwrites), and its newest test did not fail."""
    return (
        entry.get("status") == Status.COMPLETED
        and entry.get("trigger") != SAFETY_TRIGGER
        and newest_test_passed(entry) is not False
    )


def newest_usable(entries: Sequence[Entry]) -> Entry | None:
    """THE newest usable full backup of a catalog (oldest first, as loaded), or None when there is none.

    What ``--latest``, drills and every status call "the last successful backup"; nothing else decides it.
    """
    return next((e for e in reversed(entries) if is_usable(e)), None)
