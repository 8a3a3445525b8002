"""One oplog operation as ``sidecar oplog find`` lists it: position, wall time, namespace, operation,
``_id`` and, for a command, its name and target.

An entry's operations are those nested in its ``applyOps`` (a mongod transaction, mongod's batched
deletes, an ``applyOps`` command), each at the entry's ``ts``, or the entry itself. A command's
namespace is the collection it acts on (``db.patients`` for ``{drop: "patients"}`` logged on
``db.$cmd``); ``dropDatabase`` and commands without a collection keep ``db.$cmd``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bson import json_util
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.engine.replay.units import OplogOp, flatten, ts_text
from sidecar.text import iso_utc

OPERATIONS = {"i": "insert", "u": "update", "d": "delete", "c": "command"}
DROPS = ("drop", "dropDatabase")
_NO_ID = object()


def position(ts: Timestamp) -> str:
    """``t:i``, as ``--before-op`` takes it."""
    return ts_text(ts)


@dataclass(frozen=True)
class Operation:
    ts: Timestamp
    wall: dt.datetime | None  # aware UTC; None when the entry has none
    operation: str  # insert, update, delete, command
    namespace: str
    database: str
    command: str | None = None
    detail: str | None = None
    transaction: bool = False
    renamed_to: str | None = None
    doc_id: Any = _NO_ID

    @property
    def has_id(self) -> bool:
        return self.doc_id is not _NO_ID

    @property
    def seconds(self) -> float:
        """The wall time in seconds (the ``ts`` second when the entry has no wall time)."""
        return self.wall.timestamp() if self.wall is not None else float(self.ts.time)

    @property
    def is_drop(self) -> bool:
        return self.command in DROPS

    @property
    def database_wide(self) -> bool:
        return self.command == "dropDatabase"

    def namespaces(self) -> tuple[str, ...]:
        """The namespaces it acts on (a rename: both)."""
        return (self.namespace, self.renamed_to) if self.renamed_to else (self.namespace,)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "operation",
            "ts": {"t": self.ts.time, "i": self.ts.inc},
            "position": position(self.ts),
            "wall": iso_utc(self.wall) if self.wall else None,
            "namespace": self.namespace,
            "operation": self.operation,
            "_id": id_json(self.doc_id) if self.has_id else None,
            "command": self.command,
            "detail": self.detail,
            "transaction": self.transaction,
            "beforeOp": position(self.ts),
        }


def id_json(value: Any) -> Any:
    """An ``_id`` as relaxed Extended JSON (``{"$oid": ...}``, numbers and strings as they are)."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def operations(doc: RawBSONDocument) -> Iterator[Operation]:
    """The operations of one raw oplog entry (no-ops and entries without a ``ts`` have none)."""
    ts = doc.get("ts")
    if not isinstance(ts, Timestamp):
        return
    wall = doc.get("wall")
    if isinstance(wall, dt.datetime) and wall.tzinfo is None:  # pymongo decodes BSON dates as naive UTC
        wall = wall.replace(tzinfo=dt.UTC)
    in_transaction = _is_transaction(doc)
    for op in flatten(ts, doc):
        if op.op in OPERATIONS:
            yield _describe(op, wall if isinstance(wall, dt.datetime) else None, in_transaction)


def _is_transaction(doc: RawBSONDocument) -> bool:
    """A multi-document transaction's entry (not a retryable write nor mongod's batched writes)."""
    batched = doc.get("multiOpType") == 1 or "stmtId" in doc
    return "lsid" in doc and "txnNumber" in doc and not batched


def _describe(op: OplogOp, wall: dt.datetime | None, transaction: bool) -> Operation:
    database = op.ns.partition(".")[0]
    common = {"ts": op.ts, "wall": wall, "database": database, "transaction": transaction}
    if op.op != "c":
        return Operation(operation=OPERATIONS[op.op], namespace=op.ns, doc_id=_doc_id(op), **common)
    name, obj = op.command, op.o
    target = obj.get(name)
    namespace = op.ns
    if name == "renameCollection" and isinstance(target, str):
        namespace = target
    elif isinstance(target, str):
        namespace = f"{database}.{target}"
    renamed = obj.get("to") if name == "renameCollection" else None
    return Operation(
        operation="command",
        namespace=namespace,
        command=name,
        detail=_detail(name, obj, op.o2),
        renamed_to=renamed if isinstance(renamed, str) else None,
        **common,
    )


def _doc_id(op: OplogOp) -> Any:
    """``o2._id`` (updates), else ``o._id``."""
    for part in (op.o2, op.doc.get("o")):
        if isinstance(part, RawBSONDocument) and "_id" in part:
            return part["_id"]
    return _NO_ID


def _detail(name: str, obj: RawBSONDocument, o2: RawBSONDocument | None) -> str | None:
    """What the command did, where the entry says it: the rename's target, the documents a drop
    removed (mongod's ``o2.numRecords``), the indexes built or dropped."""
    if name == "renameCollection":
        return f"to {obj.get('to')}"
    if name == "drop" and o2 is not None and "numRecords" in o2:
        return f"{o2['numRecords']} documents"
    if name in ("createIndexes", "commitIndexBuild", "startIndexBuild"):
        specs = obj.get("indexes") or [obj]  # a list, or mongod 4.2's inline spec
        names = [s.get("name") for s in specs if isinstance(s, RawBSONDocument)]
        named = [n for n in names if isinstance(n, str)]
        return "index " + ", ".join(named) if named else None
    if name in ("dropIndexes", "deleteIndexes", "dropIndex"):
        index = obj.get("index")
        return f"index {index}" if isinstance(index, str) else None
    return None
