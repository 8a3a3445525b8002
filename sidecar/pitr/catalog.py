"""``oplog/oplog-slices.json``: the record of the oplog archive (``backup-info.json`` stays the list of
backups). One JSON object::

    {"slices": [slice, ...],   # in chain order, oldest first (fields: docs/pitr.md)
     "gaps": [gap, ...],       # gaps found while archiving (a rollover on resume), oldest first
     "verification": {"pitr": result}}  # the newest pitr check of the slices (integrity/pitr.py)

A gap's ``from`` is the last entry stored before it and ``to`` the first stored after it: the entries
strictly between are not in the archive. Written like ``backup-info.json`` (locked, atomic).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson.timestamp import Timestamp

from sidecar.pitr import optime
from sidecar.pitr.slices import SliceEntry
from sidecar.store.catalog import CatalogError
from sidecar.store.jsonfile import LockedJsonFile

SLICES_NAME = "oplog-slices.json"
ARCHIVER_LOCK = ".archiver.lock"

GapEntry = dict[str, Any]
Document = dict[str, list[dict[str, Any]]]


class ArchiverBusy(RuntimeError):
    """Another archiver (a ``sidecar serve`` or ``sidecar pitr stream``) writes this directory."""


def _empty() -> Document:
    return {"slices": [], "gaps": []}


class SliceCatalog:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / SLICES_NAME
        self._file = LockedJsonFile(self.path, CatalogError)

    def load(self) -> Document:
        return self._valid(self._file.read(_empty()))

    def slices(self) -> list[SliceEntry]:
        return self.load()["slices"]

    def last_position(self) -> Timestamp | None:
        """The newest stored entry: the archiver resumes after it."""
        slices = self.slices()
        return optime.from_json(slices[-1]["last"]) if slices else None

    def add_slice(self, entry: SliceEntry) -> None:
        """Append a slice; refused unless it joins the newest one (or says it does not: prev=None)."""

        def change(document: Document) -> None:
            slices = self._valid(document)["slices"]
            newest = slices[-1]["last"] if slices else None
            if slices and entry["prev"] is not None and entry["prev"] != newest:
                raise CatalogError(
                    f"{entry['fileName']} follows {entry['prev']} but the newest slice ends at {newest}: "
                    f"is a second archiver writing {self.directory}?"
                )
            slices.append(entry)

        self._file.update(_empty(), change)

    def add_gap(self, gap: GapEntry) -> None:
        def change(document: Document) -> None:
            self._valid(document)["gaps"].append(gap)

        self._file.update(_empty(), change)

    def record_verification(self, level: str, result: dict[str, Any]) -> None:
        """The newest result of a check of the archive's content (``verification.<level>``: the pitr
        level's replay from one base backup to the next), kept beside the slices it read."""

        def change(document: Document) -> None:
            self._valid(document).setdefault("verification", {})[level] = result  # type: ignore[call-overload]

        self._file.update(_empty(), change)

    def _valid(self, document: Any) -> Document:
        if not (isinstance(document, dict) and isinstance(document.get("slices"), list)):
            raise CatalogError(f"{self.path} must be a JSON object with a list of slices")
        document.setdefault("gaps", [])
        return document

    @contextlib.contextmanager
    def archiver_lock(self) -> Iterator[None]:
        """Held while an archiver runs: a second one (here or in another process) is refused."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ARCHIVER_LOCK, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise ArchiverBusy(
                    f"another oplog archiver (pid {holder}) is writing {self.directory}"
                ) from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
