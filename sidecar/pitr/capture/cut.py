"""A backup's oplog cut taken from the archive instead of the server's oplog.

The dump notes ``start`` (the newest entry before it reads the collections) and ``end`` (the newest
after); with an archiver at work on the same backup directory, the entries ``[start, end]`` (what
mongodump --oplog keeps; a restore never replays the first) are read from the slices (through
``ArchiveSource``) once the archive holds ``end``, so the server's oplog is not read again (on the
embedded server every oplog query scans the whole oplog; on mongod it is load on the primary).
When no archiver runs, or the archive does not reach ``end`` within
``SIDECAR_PITR_CUT_WAIT_SECONDS``, or does not hold every entry of the range (a gap, an archive that
starts after ``start``), the caller reads the server's oplog as before and records why. When the
archive begins right after ``start`` (an archiver that started at the newest entry, or after the last
backup's cut, on an idle server), the entries at ``start`` are read from the server by their timestamp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.engine.dump import DumpCancelled, DumpError
from sidecar.pitr import optime
from sidecar.pitr.capture.cut_request import requested_cut
from sidecar.pitr.capture.tailer import oplog
from sidecar.pitr.record.catalog import ARCHIVER_LOCK, SliceCatalog
from sidecar.pitr.record.slices import SliceEntry, oplog_dir, read_entries
from sidecar.store.filelock import is_locked

POLL_SECONDS = 0.1


def archiver_running(directory: Path) -> bool:
    """An archiver (this process's or another's) holds the directory's lock."""
    return is_locked(Path(directory) / ARCHIVER_LOCK)


def covering(slices: list[SliceEntry], start: Timestamp, end: Timestamp) -> list[SliceEntry] | None:
    """The slices that hold every entry in ``[start, end]``, joined; None when the archive has a hole.
    A slice holds whole timestamp groups, so the one that holds ``start`` holds all its entries."""
    chosen: list[SliceEntry] = []
    for entry in slices:
        if optime.from_json(entry["last"]) < start:
            continue
        if chosen and entry["prev"] != chosen[-1]["last"]:
            return None  # a gap inside the range
        if not chosen and not _reaches(entry, start):
            return None  # the archive starts after ``start``, or a gap follows it
        chosen.append(entry)
        if optime.from_json(entry["last"]) >= end:
            return chosen
    return None


def _reaches(entry: SliceEntry, start: Timestamp) -> bool:
    """The slice holds ``start``, or follows it directly."""
    return optime.from_json(entry["first"]) <= start or entry["prev"] == optime.as_json(start)


class ArchiveCut:
    """``take(start, end)``: the raw entries ``[start, end]`` from the archive, or why not (a str)."""

    def __init__(
        self, settings: Settings, client: pymongo.MongoClient, cancel: threading.Event | None = None
    ):
        self.settings, self.client = settings, client
        self.directory = oplog_dir(settings)
        self.catalog = SliceCatalog(self.directory)
        self.cancel = cancel or threading.Event()

    def take(self, start: Timestamp, end: Timestamp) -> Iterator[bytes] | str:
        if not archiver_running(self.directory):
            return "the oplog archiver is not running"
        if start == end:
            # no write during the dump: its one entry may precede an archiver that started after it
            # (on an idle server), which would never store it; waiting would only cost the full wait
            return "no write during the dump: its one oplog entry is read from the server"
        if not self._wait_for(end):
            if self.cancel.is_set():
                raise DumpCancelled()
            wait = self.settings.pitr_cut_wait_seconds
            return (
                f"the oplog archive did not reach {optime.label(end)} within {wait:g}s "
                "(the archiver is behind)"
            )
        chain = covering(self.catalog.slices(), start, end)
        if chain is None:
            return f"the oplog archive does not hold every entry from {optime.label(start)} on (a gap)"
        return self._entries(chain, start, end)

    def _wait_for(self, end: Timestamp) -> bool:
        deadline = time.monotonic() + self.settings.pitr_cut_wait_seconds
        with requested_cut(self.directory, end):
            while (self.catalog.last_position() or Timestamp(0, 0)) < end:
                if time.monotonic() >= deadline or self.cancel.wait(POLL_SECONDS):
                    return False
        return True

    def _entries(self, chain: list[SliceEntry], start: Timestamp, end: Timestamp) -> Iterator[bytes]:
        """One block of raw BSON per slice; only the slices at the range's ends are filtered."""
        if optime.from_json(chain[0]["first"]) > start:  # the archive follows ``start``
            group = b"".join(entry.raw for entry in oplog(self.client).find({"ts": start}))
            if not group:  # a restore skips the first entry as the dump's start: it must be that one
                raise DumpError("oplog overflow: the oplog entry at the start of the dump rolled off", "dump")
            yield group
        for entry in chain:
            raws = read_entries(self.settings, self.directory / entry["fileName"])
            inside = optime.from_json(entry["first"]) >= start and optime.from_json(entry["last"]) <= end
            if not inside:
                raws = [raw for raw in raws if start <= RawBSONDocument(raw)["ts"] <= end]
            if raws:
                yield b"".join(raws)
