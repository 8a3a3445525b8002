"""The one input builder of a replay to a point: what a restore to a point and the ``pitr`` proof read.

    source = PointInput(settings, base_end, slices)   # the plan's base consistent point and slices
    source.read_slices()                      # each slice read through, checked; UnverifiedSlice if not
    ... source.feed_base(chunk) for each oplog chunk of the base archive, as its scan reads it ...
    options = source.options(until=..., scope=...)    # or before=...; the configured writers
    planned = source.plan(options)            # the replay engine's one planner, before any write
    result = source.replay(client, options, cancel=..., progress=...)

The entries are the base archive's own oplog (``ArchiveOplog``: all but its first entry, which is in
the data; the collections were read after the dump's start, so the rest brings them to its consistent
point) and then every archived entry after the base's consistent point, from the slices the plan
names, in chain order. A slice is read through and checked against its catalog entry (sha256, number
of entries) before any of its entries is used; its entries stream into a spool on disk meanwhile, so
the memory a restore takes does not grow with the slices' size or the tail's length. The replay's cut
(``ReplayOptions``) says where it stops. ``service/point.py`` (the restore) and ``integrity/pitr.py``
(the check) both build it, so the check proves the code an incident runs.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.archive import DocumentChunk
from sidecar.config import Settings
from sidecar.engine.replay.archive_oplog import ArchiveOplog, OplogSpool
from sidecar.engine.replay.engine import ReplayOptions, ReplayPlan, ReplayResult, plan_replay, replay
from sidecar.engine.replay.scope import ReplayScope
from sidecar.pitr.record.slices import SliceEntry, SliceError, iter_entries, oplog_dir
from sidecar.progress import Progress


class UnverifiedSlice(SliceError):
    """A slice that cannot be read back as its catalog entry says; ``slice`` is its file name."""

    def __init__(self, message: str, slice_name: str):
        super().__init__(message)
        self.slice = slice_name


class PointInput:
    def __init__(self, settings: Settings, base_end: Timestamp | None, slices: Sequence[SliceEntry] = ()):
        self.settings = settings
        self.base_end = base_end  # the base's consistent point: the slices' entries after it are read
        self.slices = list(slices)
        self.base = ArchiveOplog()
        self._after = OplogSpool()  # the slices' entries after base_end
        self._kept: list[tuple[str, int]] = []  # (slice file name, entries kept), in chain order

    def read_slices(self) -> None:
        """Read and check every slice, keeping its entries after the base's point; UnverifiedSlice."""
        directory = oplog_dir(self.settings)
        for item in self.slices:
            name = item["fileName"]
            self._kept.append((name, self._keep(directory / name, item)))

    def _keep(self, path: Path, item: SliceEntry) -> int:
        """The slice's entries after the base's point, streamed into the spool as they are read (a
        slice's entries are never all in memory at once), checked once its end is read: nothing reads
        the spool before ``read_slices`` has returned. How many it kept."""
        read = kept = 0
        try:
            for raw in iter_entries(self.settings, path, item, sha256=item["sha256"]):
                read += 1
                if self.base_end is None or _ts(raw) > self.base_end:
                    self._after.add(raw)
                    kept += 1
        except SliceError as exc:
            raise UnverifiedSlice(str(exc), path.name) from None
        if read != item["entries"]:
            raise UnverifiedSlice(
                f"{path.name}: {read} entries, the catalog says {item['entries']}", path.name
            )
        return kept

    def feed_base(self, chunk: DocumentChunk) -> None:
        """An oplog chunk of the base archive, as its scan reads it."""
        self.base.feed(chunk)

    def entries(self) -> Iterator[bytes]:
        """The base's oplog but its first entry, then the slices' entries after its consistent point."""
        return itertools.chain(self.base.replayed_entries(), self._after.raw_entries())

    def slice_entries(self) -> Iterator[tuple[str, bytes]]:
        """(slice file name, entry) of the slices' entries kept, in order."""
        stream = self._after.raw_entries()
        for name, count in self._kept:
            for raw in itertools.islice(stream, count):
                yield name, raw

    @property
    def count(self) -> int:
        """How many entries ``entries`` gives."""
        return self.base.replayed + self._after.entries

    def options(
        self,
        *,
        until: Timestamp | None = None,
        before: Timestamp | None = None,
        scope: ReplayScope | None = None,
    ) -> ReplayOptions:
        """Where the replay stops and what it writes, applied by the configured number of writers."""
        return ReplayOptions(
            until=until,
            before=before,
            scope=scope or ReplayScope(),
            writers=self.settings.pitr_replay_writers,
        )

    def plan(self, options: ReplayOptions) -> ReplayPlan:
        return plan_replay(self.entries(), options)

    def replay(
        self,
        client: pymongo.MongoClient,
        options: ReplayOptions,
        *,
        cancel: threading.Event | None = None,
        progress: Progress | None = None,
    ) -> ReplayResult:
        return replay(client, self.entries(), options, cancel=cancel, progress=progress)

    def close(self) -> None:
        self.base.close()
        self._after.close()


def _ts(raw: bytes) -> Timestamp:
    return RawBSONDocument(raw)["ts"]
