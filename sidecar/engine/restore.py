"""The native restore engine: a mongodump archive into MongoDB, the way ``mongorestore`` does it.

Documents are never decoded: the archive's raw BSON goes to the server as ``RawBSONDocument`` batches
bounded in count and bytes, so memory stays flat whatever the archive size. Collections are created
with their options (capped, validator, collation...) before their documents, indexes are built after
them, views last, then the oplog is replayed (``oplog_replay``) when the plan (``restore_plan``) says
so. Write errors are counted and sampled, never swallowed; the caller decides what a failed write
means for the job. ``check_counts`` is the post-restore count check.

The archive is read once here; the caller verifies it (a full integrity pass) before calling, so a
corrupt archive is refused before the first write.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pymongo
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from sidecar.archive import ArchiveReader, DocumentChunk
from sidecar.engine.replay.archive_oplog import ArchiveOplog
from sidecar.engine.restore_errors import (
    MAX_ERROR_SAMPLES,
    RestoreCancelled,
    RestoreError,
    error_text,
    server_message,
    shorten,
)
from sidecar.engine.restore_plan import NamespacePlan, RestoreOptions, RestorePlan, clean_index
from sidecar.progress import Progress


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

    @property
    def first_error(self) -> str:
        """The first sampled error as ``namespace: message``, for a one-line report."""
        first = self.errors[0] if self.errors else {}
        return f"{first.get('namespace')}: {first.get('message')}"

    def note_error(self, sample: dict[str, Any], count: int = 1) -> None:
        self.error_count += count
        if len(self.errors) < MAX_ERROR_SAMPLES:
            self.errors.append(sample)


class NativeRestore:
    def __init__(
        self,
        client: pymongo.MongoClient,
        plan: RestorePlan,
        options: RestoreOptions,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ):
        self.client = client
        self.plan = plan
        self.options = options
        self.cancel = cancel or threading.Event()
        self.state = progress or Progress()
        self.result = RestoreResult()

    def run(self, stream: BinaryIO) -> RestoreResult:
        """Write the plan's namespaces from the uncompressed archive ``stream``."""
        self.result.namespaces = {p.target: NamespaceOutcome() for p in self.plan.namespaces}
        self.state.begin("prepare", len(self.plan.namespaces))
        self._prepare_collections()
        spool = ArchiveOplog() if self.plan.replay_oplog else None
        try:
            self.state.phase = "documents"
            self.state.count("documents", self.plan.documents, self.plan.bytes)
            self._copy_documents(stream, spool)
            self.state.phase = "indexes"
            self._build_indexes()
            self._create_views()
            if spool is not None:
                self.state.begin("oplog", unit="entries", total=spool.replayed)
                self.result.oplog = spool.replay(self.client, self.cancel, self.state)
        finally:
            if spool is not None:
                spool.close()
        self.state.phase = "done"
        return self.result

    def _prepare_collections(self) -> None:
        for p in self.plan.namespaces:
            db = self.client[p.target_db]
            if p.action == "replace":
                db.drop_collection(p.target_collection)
            if p.is_view or p.action == "append":
                continue
            try:
                _create(db, p)
            except OperationFailure as exc:
                raise RestoreError(f"cannot create {p.target}: {server_message(exc)}") from None

    def _copy_documents(self, stream: BinaryIO, spool: ArchiveOplog | None) -> None:
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
                continue
            if event.namespace.is_oplog:
                if spool is not None:
                    spool.feed(event)
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
        written = size
        try:
            coll.insert_many(batch, ordered=False)
            inserted = len(batch)
        except BulkWriteError as exc:
            inserted = exc.details.get("nInserted", 0)
            failed = len(batch) - inserted
            errors = exc.details.get("writeErrors", [])
            written -= sum(len(batch[err["index"]].raw) for err in errors)  # the bytes that went in
            for err in errors[:MAX_ERROR_SAMPLES]:
                self.result.note_error(_write_error_sample(p.target, err), count=0)
            self.result.error_count += failed
            outcome.failed += failed
            self.result.failed_documents += failed
        except PyMongoError as exc:
            raise RestoreError(f"writing {p.target} failed: {error_text(exc)}") from None
        outcome.inserted += inserted
        self.result.documents += inserted
        self.result.bytes += written
        self.state.documents += len(batch)
        self.state.bytes += size
        self.state.advance(len(batch))

    def _build_indexes(self) -> None:
        for p in self.plan.namespaces:
            if p.is_view:
                continue
            if self.cancel.is_set():
                raise RestoreCancelled()
            specs = [clean_index(ix) for ix in p.indexes if ix.get("name") != "_id_"]
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
                        self.result.note_error(_refused(p, exc, index=spec.get("name")))

    def _create_views(self) -> None:
        for p in self.plan.namespaces:
            if not p.is_view:
                continue
            try:
                _create(self.client[p.target_db], p)
            except OperationFailure as exc:
                self.result.note_error(_refused(p, exc))
            self.state.namespaces_done += 1


def _create(db: pymongo.database.Database, p: NamespacePlan) -> None:
    """Create the collection or view with the archive's options (capped, validator, viewOn...)."""
    command = SON([("create", p.target_collection)])
    command.update(p.options)
    db.command(command)


def _refused(p: NamespacePlan, exc: OperationFailure, **what: Any) -> dict[str, Any]:
    """The error sample of a creation the server refused."""
    return {"namespace": p.target, **what, "code": exc.code, "message": server_message(exc)}


def _write_error_sample(ns: str, err: Mapping[str, Any]) -> dict[str, Any]:
    sample: dict[str, Any] = {"namespace": ns, "code": err.get("code"), "message": shorten(err.get("errmsg"))}
    op = err.get("op")
    with contextlib.suppress(Exception):  # the failed document's _id, if it has a readable one
        if op is not None and "_id" in op:
            sample["_id"] = shorten(repr(op["_id"]), 120)
    return sample


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
