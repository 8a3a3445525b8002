"""Replaying a mongodump archive's oplog, the way ``mongorestore --oplogReplay`` does it.

``OplogSummary`` says what a replay would do before the first write, ``server_has_apply_ops`` whether
the server can do it, ``OplogSpool`` keeps the entries aside while the collections are restored, and
``OplogReplay`` applies them with ``applyOps``.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.son import SON
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from sidecar.archive import DocumentChunk
from sidecar.engine.restore_errors import MAX_ERROR_SAMPLES, RestoreCancelled, RestoreError, server_message
from sidecar.engine.restore_plan import SKIPPED_DATABASES, clean_index

# Decoding options for oplog entries (the only documents this engine decodes): keep every value
# re-encodable as it was (dates outside datetime's range, invalid UTF-8 from old drivers).
_OPLOG_CODEC = CodecOptions(
    document_class=SON,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
    unicode_decode_error_handler="surrogateescape",
)
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
        return False, f"applyOps refused: {server_message(exc)}"


class OplogSpool:
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
                f"({first.get('op')} on {first.get('ns')}): {server_message(exc)}"
            ) from None
        self.applied += int(reply.get("applied", len(ops)))

    def _build_index(self, op: Mapping[str, Any]) -> None:
        obj = op["o"]
        name = _command_name(op)
        db_name = str(op["ns"]).split(".", 1)[0]
        coll = obj[name]
        if "indexes" in obj:
            specs = [clean_index(ix) for ix in obj["indexes"]]
        else:
            specs = [clean_index({k: v for k, v in obj.items() if k != name})]
        try:
            self.client[db_name].command("createIndexes", coll, indexes=specs)
        except OperationFailure as exc:
            raise RestoreError(f"oplog replay: building indexes on {db_name}.{coll} failed: {exc}") from None
        self.index_builds += 1


def _without_uuid(op: Mapping[str, Any]) -> SON:
    return SON((k, v) for k, v in op.items() if k != "ui")
