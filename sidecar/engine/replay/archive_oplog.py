"""A mongodump archive's own oplog, kept aside and replayed the way ``mongorestore --oplogReplay`` does.

``OplogSpool`` keeps raw entries aside (a little memory, then a temporary file) while the collections are
restored. ``ArchiveOplog`` is that spool for an archive's oplog, and the one place that knows its
rule: the first entry is the one the dump noted before it read any collection, so it is in the data
and never replayed (``replayed_entries``). ``plan`` says what a replay would do before the first
write (the replay engine's ``plan_replay``), ``replay`` applies it (``replay``: ``applyOps`` batches
where the server has it, else the native translation); ``server_has_apply_ops`` is the probe.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pymongo

from sidecar.archive import DocumentChunk
from sidecar.archive.bsonstream import read_documents
from sidecar.engine.replay.engine import ReplayCounts, ReplayOptions, ReplayPlan, plan_replay, replay
from sidecar.engine.replay.engine import server_has_apply_ops as server_has_apply_ops
from sidecar.engine.replay.units import ts_text
from sidecar.progress import Progress

__all__ = ["ArchiveOplog", "OplogSpool", "server_has_apply_ops"]
INDEX_BUILD = "createIndexes"


SPOOL_MEMORY_BYTES = 1024 * 1024


class OplogSpool:
    """Oplog entries kept aside (memory up to SPOOL_MEMORY_BYTES, then a temp file) until the
    collections are in."""

    def __init__(self) -> None:
        # small: a restore to a point holds two spools (the base's oplog, the slices') through the
        # whole restore, and a temp file costs the page cache, not the process's memory
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
        self.entries = 0

    def add(self, data: memoryview | bytes, entries: int = 1) -> None:
        """Raw entries (``entries`` of them, concatenated) at the end."""
        self.file.write(data)
        self.entries += entries

    def raw_entries(self) -> Iterator[bytes]:
        self.file.seek(0)
        yield from read_documents(self.file)

    def close(self) -> None:
        self.file.close()


class ArchiveOplog(OplogSpool):
    """An archive's oplog as its chunks are read; replayed but its first entry (see the module doc)."""

    def feed(self, chunk: DocumentChunk) -> None:
        self.add(chunk.data, sum(1 for _ in chunk.documents()))

    @property
    def replayed(self) -> int:
        """How many entries a replay reads."""
        return max(self.entries - 1, 0)

    def replayed_entries(self) -> Iterator[bytes]:
        """Every entry but the first: the dump noted that one before it read any collection."""
        return itertools.islice(self.raw_entries(), 1, None)

    def plan(self, options: ReplayOptions | None = None) -> ReplayPlan:
        return plan_replay(self.replayed_entries(), options)

    def summary(self, plan: ReplayPlan) -> dict[str, Any]:
        """What the archive's own replay (``plan``, of the default options) would do, as a restore's
        dry run reports it: the entries counted with the first, which is in the data."""
        return {
            **self._counts(plan),
            "entries": self.entries,
            "firstTs": ts_text(plan.first_ts) if plan.first_ts else None,
            "lastTs": ts_text(plan.last_ts) if plan.last_ts else None,
            "unsupported": [f"{e.reason} at {ts_text(e.ts)} on {e.ns!r}" for e in plan.refused],
            "pendingTransactions": plan.pending_transactions,
        }

    def _counts(self, counts: ReplayCounts) -> dict[str, int]:
        index_builds = sum(ops.get(INDEX_BUILD, 0) for ops in counts.namespaces.values())
        return {
            "toApply": counts.operations - index_builds,
            "indexBuilds": index_builds,
            "skipped": counts.skipped + (self.entries > 0),
        }

    def replay(
        self,
        client: pymongo.MongoClient,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Apply the archive's oplog (but its first entry) to the restored collections."""
        result = replay(client, self.replayed_entries(), ReplayOptions(), cancel=cancel, progress=progress)
        counts = self._counts(result)
        return {"applied": counts.pop("toApply"), **counts, "method": result.method}
