"""Replaying a mongodump archive's oplog, the way ``mongorestore --oplogReplay`` does it.

``OplogSummary`` says what a replay would do before the first write, ``server_has_apply_ops`` whether
the server has ``applyOps``, ``OplogSpool`` keeps the entries aside while the collections are
restored, and ``OplogReplay`` applies them through the replay engine (``replay``): ``applyOps``
batches where the server has it, else the native translation. The archive's first entry is the one
the dump noted before it read any collection, so it is in the data and never replayed.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.archive import DocumentChunk
from sidecar.archive.bsonstream import read_documents
from sidecar.engine.replay.apply import Translator, action_kind
from sidecar.engine.replay.engine import ReplayOptions, replay, server_has_apply_ops
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import Assembler, OplogOp, ReplayError, Unit, ts_text
from sidecar.engine.restore_errors import MAX_ERROR_SAMPLES
from sidecar.progress import Progress

__all__ = ["OplogReplay", "OplogSpool", "OplogSummary", "server_has_apply_ops"]
INDEX_BUILD = "createIndexes"


@dataclass
class OplogSummary:
    """What replaying the archive's oplog would do, known before the first write."""

    entries: int = 0
    first_ts: Timestamp | None = None
    last_ts: Timestamp | None = None
    to_apply: int = 0  # writes and commands but index builds
    index_builds: int = 0  # createIndexes/commitIndexBuild entries, run as createIndexes
    skipped: int = 0
    unsupported: list[str] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)
    assembler: Assembler = field(default_factory=Assembler, repr=False)
    translator: Translator = field(default_factory=lambda: Translator(ReplayScope()), repr=False)

    def feed(self, chunk: DocumentChunk) -> None:
        for raw in chunk.documents():
            self.add_raw(bytes(raw))

    def add(self, entry: Mapping[str, Any]) -> None:
        self.add_raw(bson.encode(entry))

    def add_raw(self, raw: bytes) -> None:
        doc = RawBSONDocument(raw)
        ts = doc.get("ts")
        self.entries += 1
        self.first_ts = self.first_ts or ts
        self.last_ts = ts
        if self.entries == 1:
            # The dump noted this entry's time before reading any collection: it is in the data.
            self.skipped += 1
            return
        try:
            # Counting needs no grouping: an entry of the embedded server's transactions is its own unit.
            grouped = doc.get("lsid") is not None and doc.get("op") in ("i", "u", "d")
            units = [Unit(ts, [OplogOp(ts, doc)])] if grouped else list(self.assembler.feed(ts, doc))
            for unit in units:
                self._count(unit)
        except ReplayError as exc:
            self._refuse(exc)

    def _count(self, unit: Unit) -> None:
        try:
            actions = self.translator.actions(unit)
        except ReplayError as exc:
            self._refuse(exc)
            return
        self.skipped += max(len(unit.ops) - len(actions), 0)
        for action in actions:
            if action_kind(action) == INDEX_BUILD:
                self.index_builds += 1
            else:
                self.to_apply += 1
            self.namespaces.add(action.target)

    def _refuse(self, exc: ReplayError) -> None:
        if len(self.unsupported) < MAX_ERROR_SAMPLES:
            self.unsupported.append(f"{exc.reason} at {ts_text(exc.ts)} on {exc.ns!r}")

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "firstTs": ts_text(self.first_ts) if self.first_ts else None,
            "lastTs": ts_text(self.last_ts) if self.last_ts else None,
            "toApply": self.to_apply,
            "indexBuilds": self.index_builds,
            "skipped": self.skipped,
            "unsupported": list(self.unsupported),
            "pendingTransactions": self.assembler.pending,
        }


class OplogSpool:
    """Oplog entries kept aside (memory up to 16 MiB, then a temp file) until the collections are in."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
        self.entries = 0

    def add(self, data: memoryview | bytes) -> None:
        self.file.write(data)

    def raw_entries(self) -> Iterator[bytes]:
        self.file.seek(0)
        yield from read_documents(self.file)

    def close(self) -> None:
        self.file.close()


class OplogReplay:
    """Applies an archive's oplog (but its first entry) to the restored collections."""

    def __init__(self, client: pymongo.MongoClient, cancel: threading.Event | None = None):
        self.client = client
        self.cancel = cancel or threading.Event()

    def run(self, raw_entries: Iterable[bytes], progress: Progress | None = None) -> dict[str, Any]:
        entries = iter(raw_entries)
        first = next(entries, None)
        result = replay(self.client, entries, ReplayOptions(), cancel=self.cancel, progress=progress)
        index_builds = sum(ops.get(INDEX_BUILD, 0) for ops in result.namespaces.values())
        return {
            "applied": result.operations - index_builds,
            "indexBuilds": index_builds,
            "skipped": result.skipped + (first is not None),
            "method": result.method,
        }
