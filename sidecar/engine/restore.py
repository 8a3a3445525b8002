"""The native restore engine: a mongodump archive into MongoDB, the way ``mongorestore`` does it.

Documents are never decoded: the archive's raw BSON goes to the server as ``RawBSONDocument`` batches
bounded in count and bytes, so memory stays flat whatever the archive size. Collections are created
with their options (capped, validator, collation...) before their documents, indexes are built after
them, views last, then the oplog is replayed when the restore is a full one. Write errors are counted
and sampled, never swallowed; the caller decides what a failed write means for the job.

The archive is read once here; the caller verifies it (a full integrity pass) before calling, so a
corrupt archive is refused before the first write.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import bson
import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.timestamp import Timestamp
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from sidecar.archive import ArchiveReader, DocumentChunk
from sidecar.archive.metadata import parse_metadata_json
from sidecar.archive.reader import Prelude
from sidecar.engine.dump import namespace_matches

SKIPPED_DATABASES = frozenset({"local", "config"})
MAX_DATABASE_NAME_BYTES = 63
MAX_ERROR_SAMPLES = 20
# Decoding options for oplog entries (the only documents this engine decodes): keep every value
# re-encodable as it was (dates outside datetime's range, invalid UTF-8 from old drivers).
_OPLOG_CODEC = CodecOptions(
    document_class=SON,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="surrogateescape",
)
_INDEX_FIELDS_DROPPED = frozenset({"ns", "entryFormat"})
# mongorestore's oplog rules (mongorestore/oplog.go): ops it never applies, commands it knows.
_IGNORED_OPS = frozenset({"n", "cd", "ci", "cu", "km"})
_IGNORED_COMMANDS = frozenset({"startIndexBuild", "abortIndexBuild", "setMultikeyMetadata"})
_KNOWN_COMMANDS = frozenset(
    {
        "renameCollection",
        "dropDatabase",
        "applyOps",
        "dbCheck",
        "create",
        "convertToCapped",
        "emptycapped",
        "drop",
        "createIndexes",
        "deleteIndex",
        "deleteIndexes",
        "dropIndex",
        "dropIndexes",
        "collMod",
        "commitIndexBuild",
    }
)
_INDEX_COMMANDS = frozenset({"createIndexes", "commitIndexBuild"})


class RestoreError(RuntimeError):
    """A restore cannot go on; ``stage`` is connect, verify or restore."""

    def __init__(self, message: str, stage: str = "restore"):
        super().__init__(message)
        self.stage = stage


class RestoreCancelled(RestoreError):
    def __init__(self) -> None:
        super().__init__("restore was cancelled", "restore")


@dataclass(frozen=True)
class RestoreOptions:
    """mongorestore's options, by the same names: --nsInclude, --nsExclude, --nsFrom/--nsTo, --drop..."""

    ns_include: tuple[str, ...] = ()
    ns_exclude: tuple[str, ...] = ()
    ns_from: tuple[str, ...] = ()
    ns_to: tuple[str, ...] = ()
    drop: bool = False
    dry_run: bool = False
    oplog_replay: bool = True  # replay the archive's oplog when the restore is a full one
    batch_documents: int = 1000
    batch_bytes: int = 8 * 1024 * 1024

    @property
    def is_full(self) -> bool:
        """Every namespace of the archive under its own name: the only case the oplog is replayed in."""
        return not (self.ns_include or self.ns_exclude or self.ns_from)

    def as_json(self) -> dict[str, Any]:
        return {
            "nsInclude": list(self.ns_include),
            "nsExclude": list(self.ns_exclude),
            "nsFrom": list(self.ns_from),
            "nsTo": list(self.ns_to),
            "drop": self.drop,
            "dryRun": self.dry_run,
            "oplogReplay": self.oplog_replay,
        }


# -- renaming ------------------------------------------------------------------------------------


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("*")]
    return re.compile("(.*?)".join(parts[:-1]) + ("(.*)" if len(parts) > 1 else "") + parts[-1] + r"\Z")


class Renamer:
    """--nsFrom/--nsTo pairs: each ``*`` in nsFrom captures text that the same-numbered ``*`` in nsTo
    receives, as mongorestore does (``maekcord.*`` -> ``restored.*``). The first matching pair wins."""

    def __init__(self, ns_from: Iterable[str], ns_to: Iterable[str]):
        ns_from, ns_to = list(ns_from), list(ns_to)
        if len(ns_from) != len(ns_to):
            raise ValueError(
                f"--ns-from and --ns-to come in pairs: got {len(ns_from)} --ns-from, {len(ns_to)} --ns-to"
            )
        self.pairs: list[tuple[re.Pattern[str], str]] = []
        for source, target in zip(ns_from, ns_to, strict=True):
            if source.count("*") != target.count("*"):
                raise ValueError(
                    f"--ns-from {source!r} and --ns-to {target!r} must have the same number of '*'"
                )
            if "." not in source or "." not in target:
                raise ValueError(
                    f"--ns-from/--ns-to take db.collection patterns, got {source!r} -> {target!r}"
                )
            self.pairs.append((_wildcard_regex(source), target))

    def __call__(self, ns: str) -> str:
        for regex, target in self.pairs:
            match = regex.match(ns)
            if match:
                pieces = target.split("*")
                out = pieces[0]
                for captured, piece in zip(match.groups(), pieces[1:], strict=True):
                    out += captured + piece
                return out
        return ns


def check_target_name(ns: str) -> str | None:
    """Why MongoDB would refuse ``ns`` as a namespace, or None."""
    db, _, coll = ns.partition(".")
    if not db or not coll:
        return "a namespace is db.collection with both parts non-empty"
    if len(db.encode()) > MAX_DATABASE_NAME_BYTES:
        return f"database name {db!r} is longer than {MAX_DATABASE_NAME_BYTES} bytes"
    bad = set(db) & set('/\\. "$\0')
    if bad:
        return f"database name {db!r} contains {''.join(sorted(bad))!r}"
    if "\0" in coll or coll.startswith("$"):
        return f"collection name {coll!r} is not allowed"
    return None


# -- planning ------------------------------------------------------------------------------------


@dataclass
class NamespacePlan:
    source: str
    target: str
    type: str
    options: dict[str, Any]
    indexes: list[dict[str, Any]]
    documents: int = 0
    bytes: int = 0
    exists: bool = False
    existing_documents: int = 0
    action: str = "create"  # create | replace (dropped first) | append (exists, no --drop)

    @property
    def target_db(self) -> str:
        return self.target.split(".", 1)[0]

    @property
    def target_collection(self) -> str:
        return self.target.split(".", 1)[1]

    @property
    def is_view(self) -> bool:
        return self.type == "view"

    def index_names(self) -> list[str]:
        return [str(ix.get("name")) for ix in self.indexes]

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "type": self.type,
            "action": self.action,
            "documents": self.documents,
            "bytes": self.bytes,
            "indexes": self.index_names(),
            "existingDocuments": self.existing_documents if self.exists else None,
        }


@dataclass
class RestorePlan:
    namespaces: list[NamespacePlan]
    skipped: list[dict[str, str]] = field(default_factory=list)
    oplog_entries: int = 0
    replay_oplog: bool = False

    def by_source(self) -> dict[str, NamespacePlan]:
        return {p.source: p for p in self.namespaces}

    @property
    def documents(self) -> int:
        return sum(p.documents for p in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.namespaces)

    def existing_targets(self) -> list[str]:
        return [p.target for p in self.namespaces if p.exists]

    def target_databases(self) -> list[str]:
        return sorted({p.target_db for p in self.namespaces})


def _metadata(meta_text: str, ns: str) -> dict[str, Any]:
    try:
        return parse_metadata_json(meta_text)
    except ValueError as exc:
        raise RestoreError(f"metadata of {ns} in the archive prelude: {exc}", "verify") from None


def plan_restore(
    prelude: Prelude,
    counts: Mapping[str, tuple[int, int]],
    options: RestoreOptions,
    rename: Callable[[str], str] | None = None,
) -> RestorePlan:
    """Which namespaces of the archive go where; ``counts`` maps source namespace -> (documents, bytes)."""
    rename = rename or Renamer(options.ns_from, options.ns_to)
    plan = RestorePlan([])
    targets: dict[str, str] = {}
    for meta in prelude.collections:
        ns = meta.namespace
        source = str(ns)
        if ns.is_oplog:
            plan.oplog_entries = counts.get(source, (0, 0))[0]
            continue
        if not namespace_matches(source, options.ns_include, options.ns_exclude):
            continue
        if ns.db in SKIPPED_DATABASES:
            plan.skipped.append({"namespace": source, "reason": f"the {ns.db} database is never restored"})
            continue
        if ns.collection.startswith("system.") and ns.collection != "system.js":
            plan.skipped.append({"namespace": source, "reason": "system collection"})
            continue
        if meta.type == "timeseries":
            raise RestoreError(
                f"{source} is a timeseries collection, which the native engine does not restore; "
                "use the mongorestore engine (SIDECAR_ENGINE=mongodump) or exclude it with --ns-exclude",
                "verify",
            )
        target = rename(source)
        problem = check_target_name(target)
        if problem:
            raise RestoreError(f"cannot restore {source} as {target}: {problem}", "verify")
        if target in targets:
            raise RestoreError(
                f"{targets[target]} and {source} would both be restored as {target}; fix --ns-from/--ns-to",
                "verify",
            )
        targets[target] = source
        metadata = _metadata(meta.metadata, source)
        documents, size = counts.get(source, (0, 0))
        plan.namespaces.append(
            NamespacePlan(
                source=source,
                target=target,
                type=meta.type or metadata.get("type") or "collection",
                options=dict(metadata.get("options") or {}),
                indexes=[dict(ix) for ix in metadata.get("indexes") or []],
                documents=documents,
                bytes=size,
            )
        )
    plan.replay_oplog = options.oplog_replay and options.is_full and plan.oplog_entries > 0
    return plan


def inspect_targets(client: pymongo.MongoClient, plan: RestorePlan, *, drop: bool) -> None:
    """Fill in which targets exist already, how many documents they hold, and so what happens to them."""
    existing: dict[str, dict[str, str]] = {}
    for db_name in plan.target_databases():
        existing[db_name] = {
            info["name"]: info.get("type", "collection")
            for info in client[db_name].list_collections(filter={}, nameOnly=True)
        }
    for p in plan.namespaces:
        kind = existing.get(p.target_db, {}).get(p.target_collection)
        p.exists = kind is not None
        if p.exists and kind != "view":
            coll = client[p.target_db][p.target_collection]
            # exact when the post-restore check will add to it, the cheap estimate when it is dropped
            p.existing_documents = coll.estimated_document_count() if drop else coll.count_documents({})
        p.action = "create" if not p.exists else ("replace" if drop else "append")


# -- the oplog -----------------------------------------------------------------------------------


def _command_name(entry: Mapping[str, Any]) -> str:
    obj = entry.get("o") or {}
    return next(iter(obj), "") if isinstance(obj, Mapping) else ""


def _skip_namespace(ns: str) -> bool:
    db, _, coll = ns.partition(".")
    return ns.startswith("__mdb_internal") or db in SKIPPED_DATABASES or coll.startswith("system.")


@dataclass
class OplogSummary:
    """What replaying the archive's oplog would do, known before the first write."""

    entries: int = 0
    first_ts: Timestamp | None = None
    last_ts: Timestamp | None = None
    to_apply: int = 0  # entries applied through applyOps
    index_builds: int = 0  # createIndexes/commitIndexBuild entries, run as createIndexes
    skipped: int = 0
    unsupported: list[str] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)

    def feed(self, chunk: DocumentChunk) -> None:
        for raw in chunk.documents():
            self.add(bson.decode(raw, _OPLOG_CODEC))

    def add(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        ts = entry.get("ts")
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        if self.entries == 1:
            # The dump noted this entry's time before reading any collection: it is in the data.
            self.skipped += 1
            return
        for op in _flatten(entry):
            kind = _classify(op)
            if kind == "skip":
                self.skipped += 1
            elif kind == "index":
                self.index_builds += 1
                self.namespaces.add(_op_namespace(op))
            elif kind == "apply":
                self.to_apply += 1
                self.namespaces.add(_op_namespace(op))
            elif len(self.unsupported) < MAX_ERROR_SAMPLES:
                self.unsupported.append(f"{kind} at {_ts_text(op.get('ts', ts))} on {op.get('ns')!r}")

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "firstTs": _ts_text(self.first_ts),
            "lastTs": _ts_text(self.last_ts),
            "toApply": self.to_apply,
            "indexBuilds": self.index_builds,
            "skipped": self.skipped,
            "unsupported": list(self.unsupported),
        }


def _ts_text(ts: Any) -> str | None:
    return f"{ts.time}:{ts.inc}" if isinstance(ts, Timestamp) else None


def _op_namespace(op: Mapping[str, Any]) -> str:
    ns = str(op.get("ns", ""))
    if ns.endswith(".$cmd"):
        coll = (op.get("o") or {}).get(_command_name(op))
        return f"{ns[:-5]}.{coll}" if isinstance(coll, str) else ns[:-5] + ".*"
    return ns


def _flatten(entry: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """An unprepared transaction's applyOps entry stands for its inner operations."""
    if (
        entry.get("op") == "c"
        and _command_name(entry) == "applyOps"
        and not entry.get("partialTxn")
        and not entry.get("prepare")
    ):
        for inner in entry["o"]["applyOps"]:
            yield from _flatten(inner)
    else:
        yield entry


def _classify(op: Mapping[str, Any]) -> str:
    """apply | index | skip, or a description of why the entry cannot be replayed."""
    kind = op.get("op")
    if kind in _IGNORED_OPS or _skip_namespace(_op_namespace(op) if kind == "c" else str(op.get("ns", ""))):
        return "skip"
    if op.get("partialTxn") or op.get("prepare"):
        return "a multi-entry or prepared transaction"
    if kind in ("i", "u", "d"):
        return "apply"
    if kind != "c":
        return f"unknown oplog op {kind!r}"
    name = _command_name(op)
    if name in _IGNORED_COMMANDS:
        return "skip"
    if name in _INDEX_COMMANDS:
        return "index"
    if name in ("commitTransaction", "abortTransaction"):
        return "a multi-entry or prepared transaction"
    if name not in _KNOWN_COMMANDS:
        return f"unknown oplog command {name!r}"
    return "apply"


def server_has_apply_ops(client: pymongo.MongoClient) -> tuple[bool, str]:
    """Probe ``applyOps`` with nothing to apply: (available, why not)."""
    try:
        client.admin.command("applyOps", [])
        return True, ""
    except OperationFailure as exc:
        if exc.code == 59:
            return False, "the server has no applyOps command"
        return False, f"applyOps refused: {_errmsg(exc)}"


class _OplogSpool:
    """Oplog entries kept aside (memory up to 16 MiB, then a temp file) until the collections are in."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)  # noqa: SIM115
        self.entries = 0

    def add(self, data: memoryview | bytes) -> None:
        self.file.write(data)

    def raw_entries(self) -> Iterator[bytes]:
        self.file.seek(0)
        while header := self.file.read(4):
            size = int.from_bytes(header, "little")
            yield header + self.file.read(size - 4)

    def close(self) -> None:
        self.file.close()


# -- the restore ---------------------------------------------------------------------------------


@dataclass
class RestoreProgress:
    phase: str = "restore"
    namespaces_total: int = 0
    namespaces_done: int = 0
    documents: int = 0
    bytes: int = 0


@dataclass
class NamespaceOutcome:
    inserted: int = 0
    failed: int = 0
    indexes_created: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "failed": self.failed, "indexesCreated": self.indexes_created}


@dataclass
class RestoreResult:
    namespaces: dict[str, NamespaceOutcome] = field(default_factory=dict)  # by target namespace
    documents: int = 0
    bytes: int = 0
    failed_documents: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # samples, MAX_ERROR_SAMPLES at most
    error_count: int = 0  # every failed write, index or collection creation
    oplog: dict[str, Any] | None = None

    def note_error(self, sample: dict[str, Any], count: int = 1) -> None:
        self.error_count += count
        if len(self.errors) < MAX_ERROR_SAMPLES:
            self.errors.append(sample)

    def as_json(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "bytes": self.bytes,
            "failedDocuments": self.failed_documents,
            "errorCount": self.error_count,
            "errors": self.errors,
            "namespaces": {ns: o.as_json() for ns, o in self.namespaces.items()},
            "oplog": self.oplog,
        }


ProgressCallback = Callable[[RestoreProgress], None]


def _short(text: Any, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(exc: BaseException, limit: int = 200) -> str:
    """A driver error in one short line: without pymongo's timeout settings and topology dump."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for cut in (" (configured timeouts", ", Timeout: ", ", full error: "):
        text = text.split(cut, 1)[0]
    return _short(text, limit)


def _errmsg(exc: OperationFailure) -> str:
    return _short((exc.details or {}).get("errmsg") or exc)


def _clean_index(spec: Mapping[str, Any]) -> SON:
    return SON((k, v) for k, v in spec.items() if k not in _INDEX_FIELDS_DROPPED)


class NativeRestore:
    def __init__(
        self,
        client: pymongo.MongoClient,
        plan: RestorePlan,
        options: RestoreOptions,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ):
        self.client = client
        self.plan = plan
        self.options = options
        self.progress = progress or (lambda p: None)
        self.cancel = cancel or threading.Event()
        self.state = RestoreProgress(namespaces_total=len(plan.namespaces))
        self.result = RestoreResult()

    def run(self, stream: BinaryIO) -> RestoreResult:
        """Write the plan's namespaces from the uncompressed archive ``stream``."""
        for p in self.plan.namespaces:
            self.result.namespaces[p.target] = NamespaceOutcome()
        self.state.phase = "prepare"
        self.progress(self.state)
        self._prepare_collections()
        spool = _OplogSpool() if self.plan.replay_oplog else None
        try:
            self.state.phase = "documents"
            self._copy_documents(stream, spool)
            self.state.phase = "indexes"
            self.progress(self.state)
            self._build_indexes()
            self._create_views()
            if spool is not None:
                self.state.phase = "oplog"
                self.progress(self.state)
                self.result.oplog = OplogReplay(self.client, self.cancel).run(spool.raw_entries())
        finally:
            if spool is not None:
                spool.close()
        self.state.phase = "done"
        self.progress(self.state)
        return self.result

    # documents

    def _prepare_collections(self) -> None:
        for p in self.plan.namespaces:
            db = self.client[p.target_db]
            if p.action == "replace":
                db.drop_collection(p.target_collection)
            if p.is_view or p.action == "append":
                continue
            command = SON([("create", p.target_collection)])
            command.update(p.options)
            try:
                db.command(command)
            except OperationFailure as exc:
                raise RestoreError(f"cannot create {p.target}: {_errmsg(exc)}") from None

    def _copy_documents(self, stream: BinaryIO, spool: _OplogSpool | None) -> None:
        plans = {p.source: p for p in self.plan.namespaces if not p.is_view}
        reader = ArchiveReader(stream)
        reader.read_prelude()
        batch: list[RawBSONDocument] = []
        batch_bytes = 0
        batch_plan: NamespacePlan | None = None
        limit_docs, limit_bytes = self.options.batch_documents, self.options.batch_bytes
        for event in reader.events():
            if self.cancel.is_set():
                raise RestoreCancelled()
            if not isinstance(event, DocumentChunk):
                if event.namespace.is_oplog:
                    continue
                target = plans.get(str(event.namespace))
                if target is not None:
                    if batch_plan is target and batch:
                        self._insert(batch_plan, batch, batch_bytes)
                        batch, batch_bytes = [], 0
                    self.state.namespaces_done += 1
                    self.progress(self.state)
                continue
            if event.namespace.is_oplog:
                if spool is not None:
                    spool.add(event.data)
                continue
            target = plans.get(str(event.namespace))
            if target is None:
                continue
            if batch_plan is not target and batch:
                self._insert(batch_plan, batch, batch_bytes)
                batch, batch_bytes = [], 0
            batch_plan = target
            for raw in event.documents():
                batch.append(RawBSONDocument(bytes(raw)))
                batch_bytes += len(raw)
                if len(batch) >= limit_docs or batch_bytes >= limit_bytes:
                    self._insert(target, batch, batch_bytes)
                    batch, batch_bytes = [], 0
        if batch and batch_plan is not None:
            self._insert(batch_plan, batch, batch_bytes)

    def _insert(self, p: NamespacePlan, batch: list[RawBSONDocument], size: int) -> None:
        outcome = self.result.namespaces[p.target]
        coll = self.client[p.target_db][p.target_collection]
        try:
            coll.insert_many(batch, ordered=False)
            inserted = len(batch)
        except BulkWriteError as exc:
            inserted = exc.details.get("nInserted", 0)
            failed = len(batch) - inserted
            for err in exc.details.get("writeErrors", [])[:MAX_ERROR_SAMPLES]:
                self.result.note_error(_write_error_sample(p.target, err), count=0)
            self.result.error_count += failed
            outcome.failed += failed
            self.result.failed_documents += failed
        except PyMongoError as exc:
            raise RestoreError(f"writing {p.target} failed: {error_text(exc)}") from None
        outcome.inserted += inserted
        self.result.documents += inserted
        self.result.bytes += size
        self.state.documents += len(batch)
        self.state.bytes += size
        self.progress(self.state)

    # indexes and views

    def _build_indexes(self) -> None:
        for p in self.plan.namespaces:
            if p.is_view:
                continue
            if self.cancel.is_set():
                raise RestoreCancelled()
            specs = [_clean_index(ix) for ix in p.indexes if ix.get("name") != "_id_"]
            if not specs:
                continue
            db = self.client[p.target_db]
            created = self.result.namespaces[p.target].indexes_created
            try:
                db.command("createIndexes", p.target_collection, indexes=specs)
                created.extend(str(s["name"]) for s in specs)
            except OperationFailure:
                # One at a time, to say which index the server refused and still build the others.
                for spec in specs:
                    try:
                        db.command("createIndexes", p.target_collection, indexes=[spec])
                        created.append(str(spec["name"]))
                    except OperationFailure as exc:
                        self.result.note_error(
                            {
                                "namespace": p.target,
                                "index": spec.get("name"),
                                "code": exc.code,
                                "message": _errmsg(exc),
                            }
                        )

    def _create_views(self) -> None:
        for p in self.plan.namespaces:
            if not p.is_view:
                continue
            command = SON([("create", p.target_collection)])
            command.update(p.options)
            try:
                self.client[p.target_db].command(command)
            except OperationFailure as exc:
                self.result.note_error(
                    {
                        "namespace": p.target,
                        "code": exc.code,
                        "message": _errmsg(exc),
                    }
                )
            self.state.namespaces_done += 1
            self.progress(self.state)


def _write_error_sample(ns: str, err: Mapping[str, Any]) -> dict[str, Any]:
    sample: dict[str, Any] = {"namespace": ns, "code": err.get("code"), "message": _short(err.get("errmsg"))}
    op = err.get("op")
    with contextlib.suppress(Exception):  # the failed document's _id, if it has a readable one
        if op is not None and "_id" in op:
            sample["_id"] = _short(repr(op["_id"]), 120)
    return sample


class OplogReplay:
    """Applies oplog entries with ``applyOps``: CRUD operations in batches, commands one at a time.

    Follows mongorestore: no-ops and internal namespaces are skipped, collection UUIDs (``ui``) are
    dropped because the restored collections have new ones, index builds become createIndexes.
    The first entry is the one the dump noted before it read any collection, so it is in the data.
    """

    BATCH_OPS = 500
    BATCH_BYTES = 8 * 1024 * 1024

    def __init__(self, client: pymongo.MongoClient, cancel: threading.Event | None = None):
        self.client = client
        self.cancel = cancel or threading.Event()
        self.applied = 0
        self.index_builds = 0
        self.skipped = 0

    def run(self, raw_entries: Iterable[bytes]) -> dict[str, Any]:
        batch: list[SON] = []
        batch_bytes = 0
        for number, raw in enumerate(raw_entries):
            if self.cancel.is_set():
                raise RestoreCancelled()
            entry = bson.decode(raw, _OPLOG_CODEC)
            if number == 0:
                self.skipped += 1
                continue
            for op in _flatten(entry):
                kind = _classify(op)
                if kind == "skip":
                    self.skipped += 1
                    continue
                if kind not in ("apply", "index"):
                    raise RestoreError(f"oplog replay: cannot replay {kind} at {_ts_text(op.get('ts'))}")
                if kind == "index" or op.get("op") == "c":
                    self._flush(batch)
                    batch, batch_bytes = [], 0
                    if kind == "index":
                        self._build_index(op)
                    else:
                        self._flush([_without_uuid(op)])
                    continue
                batch.append(_without_uuid(op))
                batch_bytes += len(raw)
                if len(batch) >= self.BATCH_OPS or batch_bytes >= self.BATCH_BYTES:
                    self._flush(batch)
                    batch, batch_bytes = [], 0
        self._flush(batch)
        return {"applied": self.applied, "indexBuilds": self.index_builds, "skipped": self.skipped}

    def _flush(self, ops: list[SON]) -> None:
        if not ops:
            return
        try:
            reply = self.client.admin.command(SON([("applyOps", ops)]))
        except OperationFailure as exc:
            first = ops[0]
            raise RestoreError(
                f"oplog replay failed in the batch starting at {_ts_text(first.get('ts'))} "
                f"({first.get('op')} on {first.get('ns')}): {_errmsg(exc)}"
            ) from None
        self.applied += int(reply.get("applied", len(ops)))

    def _build_index(self, op: Mapping[str, Any]) -> None:
        obj = op["o"]
        name = _command_name(op)
        db_name = str(op["ns"]).split(".", 1)[0]
        coll = obj[name]
        if "indexes" in obj:
            specs = [_clean_index(ix) for ix in obj["indexes"]]
        else:
            specs = [_clean_index({k: v for k, v in obj.items() if k != name})]
        try:
            self.client[db_name].command("createIndexes", coll, indexes=specs)
        except OperationFailure as exc:
            raise RestoreError(f"oplog replay: building indexes on {db_name}.{coll} failed: {exc}") from None
        self.index_builds += 1


def _without_uuid(op: Mapping[str, Any]) -> SON:
    return SON((k, v) for k, v in op.items() if k != "ui")


# -- after the restore ---------------------------------------------------------------------------


def check_counts(
    client: pymongo.MongoClient,
    plan: RestorePlan,
    result: RestoreResult,
    changed_by_oplog: Iterable[str] = (),
) -> dict[str, Any]:
    """The runbook's post-restore verification: each restored namespace's count against the archive's.

    A namespace that was created or replaced must hold exactly the archive's documents; one appended
    to must hold what it held plus what was inserted. Namespaces the oplog replay wrote to are
    reported but not judged (the replay legitimately changes them).
    """
    changed = set(changed_by_oplog)
    namespaces: dict[str, Any] = {}
    mismatches: list[str] = []
    for p in plan.namespaces:
        if p.is_view:
            continue
        actual = client[p.target_db][p.target_collection].count_documents({})
        inserted = result.namespaces.get(p.target, NamespaceOutcome()).inserted
        expected = p.existing_documents + inserted if p.action == "append" else p.documents
        item = {"archive": p.documents, "expected": expected, "actual": actual}
        if p.source in changed or p.target in changed:
            item["changedByOplogReplay"] = True
        elif actual != expected:
            mismatches.append(f"{p.target}: expected {expected}, found {actual}")
        item["ok"] = actual == expected or "changedByOplogReplay" in item
        namespaces[p.target] = item
    return {"ok": not mismatches, "mismatches": mismatches, "namespaces": namespaces}
