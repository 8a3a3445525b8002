"""The native dump engine: pymongo raw BSON batches into the mongodump archive format.

Documents are never decoded: the server's raw batches are written as they come. Several collections
are read in parallel by worker threads; one writer thread (the caller's) owns the archive stream, so
CRCs, compression and file writes overlap with the reads. Memory is bounded by the queue length
times the batch size.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import bson
import pymongo
from bson.timestamp import Timestamp

from sidecar import __version__
from sidecar.archive import ArchiveHeader, ArchiveWriter, CollectionMetadata, Namespace
from sidecar.archive.bsonstream import count_documents, split_documents
from sidecar.archive.format import OPLOG_NAMESPACE
from sidecar.archive.metadata import build_metadata_json
from sidecar.engine.namespaces import namespace_matches
from sidecar.progress import Progress

SYSTEM_DATABASES = frozenset({"admin", "local", "config"})
TOOL_VERSION = f"mongo-backup-sidecar/{__version__}"


class DumpError(RuntimeError):
    """A dump failed; ``stage`` says where (connect, dump, write) for the failure metrics."""

    def __init__(self, message: str, stage: str = "dump"):
        super().__init__(message)
        self.stage = stage


class DumpCancelled(DumpError):
    def __init__(self) -> None:
        super().__init__("backup was cancelled", stage="dump")


@dataclass(frozen=True)
class DumpOptions:
    database: str = ""
    ns_include: tuple[str, ...] = ()
    ns_exclude: tuple[str, ...] = ()
    parallel_collections: int = 4
    oplog: str = "auto"  # auto: on a replica set, for full dumps
    batch_size: int = 1000

    @property
    def is_full_dump(self) -> bool:
        return not (self.database or self.ns_include or self.ns_exclude)


@dataclass
class NamespaceStats:
    documents: int = 0
    bytes: int = 0
    crc: int = 0
    type: str = "collection"


SOURCE_SERVER = "server"  # the entries were read from the server's oplog
SOURCE_ARCHIVE = "archive"  # ... from the oplog archive's slices (pitr/capture/cut.py)
SOURCE_NONE = "none"  # a filtered dump: the cut is recorded, no entries are in the archive

# (start, end) -> the raw entries [start, end] in blocks, or why they cannot be had (a str)
OplogFromArchive = Callable[[Timestamp, Timestamp], "Iterator[bytes] | str"]


@dataclass
class OplogRange:
    start: Timestamp
    end: Timestamp
    entries: int | None = 0  # None: none in the archive (a filtered dump)
    source: str = SOURCE_SERVER
    fallback: str | None = None  # why the archive could not give the entries

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": {"t": self.start.time, "i": self.start.inc},
            "end": {"t": self.end.time, "i": self.end.inc},
            "entries": self.entries,
            "source": self.source,
        }
        if self.fallback:
            data["fallback"] = self.fallback
        return data


@dataclass
class DumpResult:
    server_version: str
    namespaces: dict[str, NamespaceStats] = field(default_factory=dict)
    oplog: OplogRange | None = None

    @property
    def uncompressed_bytes(self) -> int:
        return sum(s.bytes for s in self.namespaces.values())


def plan_collections(client: pymongo.MongoClient, options: DumpOptions) -> list[CollectionMetadata]:
    """The prelude entries of every namespace to dump, with indexes and options as mongodump records them."""
    databases = (
        [options.database]
        if options.database
        else sorted(d for d in client.list_database_names() if d not in SYSTEM_DATABASES)
    )
    plan = []
    for db_name in databases:
        db = client[db_name]
        for info in sorted(db.list_collections(), key=lambda i: i["name"]):
            name, type_ = info["name"], info.get("type", "collection")
            if name.startswith("system.") or not namespace_matches(
                f"{db_name}.{name}", options.ns_include, options.ns_exclude
            ):
                continue
            indexes = [] if type_ == "view" else list(db[name].list_indexes())
            metadata = build_metadata_json(
                name,
                options=info.get("options"),
                indexes=indexes,
                uuid=info.get("info", {}).get("uuid"),
                type_=type_,
            )
            plan.append(CollectionMetadata(db_name, name, metadata, type_))
    return plan


def _latest_oplog_ts(client: pymongo.MongoClient) -> Timestamp:
    entry = client.local["oplog.rs"].find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    if entry is None:
        raise DumpError("the oplog is empty; cannot take a point-in-time backup", stage="dump")
    return entry["ts"]


class _Sentinel:
    """Marks the end of one namespace in the queue from workers to the writer."""

    def __init__(self, ns: Namespace, error: BaseException | None = None):
        self.ns, self.error = ns, error


class NativeDump:
    def __init__(
        self,
        client: pymongo.MongoClient,
        options: DumpOptions,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        from_archive: OplogFromArchive | None = None,
    ):
        self.client = client
        self.options = options
        self.from_archive = from_archive  # the oplog archive, when an archiver runs (pitr/capture/cut.py)
        self.cancel = cancel or threading.Event()  # the caller's: set from outside to abort
        self._stop = threading.Event()  # ours: set when the writer gives up, to stop the readers
        self.state = progress or Progress()

    def use_oplog(self) -> bool:
        wanted = self.options.oplog
        if wanted == "off":
            return False
        replica_set = _is_replica_set(self.client)
        if wanted == "on":
            if not replica_set:
                raise DumpError("SIDECAR_OPLOG=on needs a replica set; this server is standalone", "connect")
            if not self.options.is_full_dump:
                raise DumpError(
                    "SIDECAR_OPLOG=on works only for full dumps (no database or ns filters)", "dump"
                )
        return replica_set and self.options.is_full_dump

    def records_cut(self) -> bool:
        """A filtered dump on a replica set records its cut (start, end) without the entries."""
        return self.options.oplog != "off" and _is_replica_set(self.client)

    def run(self, out: BinaryIO) -> DumpResult:
        server_version = self.client.server_info().get("version", "unknown")
        with_oplog = self.use_oplog()
        cut_only = not with_oplog and self.records_cut()
        oplog_start = _latest_oplog_ts(self.client) if with_oplog or cut_only else None
        plan = plan_collections(self.client, self.options)
        prelude = list(plan)
        if with_oplog:
            prelude.append(CollectionMetadata(*OPLOG_NAMESPACE, metadata="", type=""))
        writer = ArchiveWriter(out)
        header = ArchiveHeader(server_version, TOOL_VERSION, self.options.parallel_collections)
        writer.write_prelude(header, prelude)
        result = DumpResult(server_version, {str(m.namespace): NamespaceStats(type=m.type) for m in plan})
        self.state.begin("dump", len(prelude))
        self._dump_collections(plan, writer, result)
        if with_oplog:
            self.state.phase = "oplog"
            result.oplog = self._dump_oplog(oplog_start, writer)
        elif cut_only:
            end = _latest_oplog_ts(self.client)
            result.oplog = OplogRange(oplog_start, end, entries=None, source=SOURCE_NONE)
        return result

    def _dump_collections(
        self, plan: list[CollectionMetadata], writer: ArchiveWriter, result: DumpResult
    ) -> None:
        work: queue.Queue[CollectionMetadata | None] = queue.Queue()
        for meta in plan:
            work.put(meta)
        workers = min(self.options.parallel_collections, len(plan)) or 1
        for _ in range(workers):
            work.put(None)
        batches: queue.Queue[tuple[Namespace, bytes, int] | _Sentinel] = queue.Queue(maxsize=workers * 2)
        threads = [
            threading.Thread(target=self._worker, args=(work, batches), daemon=True) for _ in range(workers)
        ]
        for t in threads:
            t.start()
        remaining = len(plan)
        try:
            while remaining:
                item = batches.get()
                if isinstance(item, _Sentinel):
                    if item.error is not None:
                        raise item.error
                    result.namespaces[str(item.ns)].crc = writer.end_namespace(item.ns)
                    remaining -= 1
                    self.state.namespaces_done += 1
                    continue
                ns, data, count = item
                writer.write_documents(ns, data)
                stats = result.namespaces[str(ns)]
                stats.documents += count
                stats.bytes += len(data)
                self.state.documents += count
                self.state.bytes += len(data)
        finally:
            if remaining:  # stopped early: tell the workers to stop reading
                self._stop.set()
            _drain(batches, threads)

    def _worker(self, work: queue.Queue, batches: queue.Queue) -> None:
        while not self._stop.is_set() and (meta := work.get()) is not None:
            ns = meta.namespace
            try:
                if meta.type != "view":
                    cursor = self.client[ns.db][ns.collection].find_raw_batches(
                        {}, batch_size=self.options.batch_size
                    )
                    with cursor:
                        for data in cursor:
                            if self._stop.is_set():
                                return
                            if self.cancel.is_set():
                                raise DumpCancelled()
                            batches.put((ns, data, count_documents(data)))
                batches.put(_Sentinel(ns))
            except BaseException as exc:  # handed to the writer thread, which re-raises it
                batches.put(_Sentinel(ns, exc))
                return

    def _dump_oplog(self, start: Timestamp, writer: ArchiveWriter) -> OplogRange:
        """Entries written while the collections were dumped, ``[start, end]`` as mongodump --oplog keeps
        them: from the archive when it can give them, else from the server's oplog."""
        end = _latest_oplog_ts(self.client)
        archived = self.from_archive(start, end) if self.from_archive else None
        if archived is not None and not isinstance(archived, str):
            return self._copy_archived(archived, OplogRange(start, end, source=SOURCE_ARCHIVE), writer)
        result = self._read_server_oplog(start, end, writer)
        result.fallback = archived
        return result

    def _copy_archived(
        self, blocks: Iterator[bytes], result: OplogRange, writer: ArchiveWriter
    ) -> OplogRange:
        ns = Namespace(*OPLOG_NAMESPACE)
        for data in blocks:
            writer.write_documents(ns, data)
            result.entries += count_documents(data)
        writer.end_namespace(ns)
        self.state.namespaces_done += 1
        return result

    def _read_server_oplog(self, start: Timestamp, end: Timestamp, writer: ArchiveWriter) -> OplogRange:
        ns = Namespace(*OPLOG_NAMESPACE)
        oplog = self.client.local["oplog.rs"]
        cursor = oplog.find_raw_batches({"ts": {"$gte": start, "$lte": end}}, sort=[("$natural", 1)])
        result = OplogRange(start, end)
        first = True
        with cursor:
            for data in cursor:
                if first and _first_ts(data) != start:
                    raise DumpError(
                        "oplog overflow: the oplog entry at the start of the dump rolled off before the dump "
                        "finished; enlarge the oplog or dump faster",
                        stage="dump",
                    )
                first = False
                writer.write_documents(ns, data)
                result.entries += count_documents(data)
        if first:
            raise DumpError("oplog overflow: no oplog entries found since the dump started", stage="dump")
        writer.end_namespace(ns)
        self.state.namespaces_done += 1
        return result


def _first_ts(data: bytes) -> Timestamp:
    return bson.decode(next(split_documents(data)))["ts"]


def _drain(batches: queue.Queue, threads: list[threading.Thread]) -> None:
    """Unblock workers waiting on a full queue after the writer stopped early, then join them."""
    while any(t.is_alive() for t in threads):
        with contextlib.suppress(queue.Empty):
            batches.get(timeout=0.05)
    for t in threads:
        t.join()


def _is_replica_set(client: pymongo.MongoClient) -> bool:
    return bool(client.admin.command("hello").get("setName"))
