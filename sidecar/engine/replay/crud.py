"""Insert, update and delete oplog entries as ordinary, idempotent writes by ``_id``.

Like oplog application (and ``applyOps``, which upserts), each write can be applied again, or over a
document a fuzzy base dump read later than the entry, and still converge:

- ``i``: an insert; where the ``_id`` is there already, a replacement by ``_id`` (``o`` is the whole
  document) instead, so the batch goes on;
- ``d``: delete by ``_id``;
- ``u``, by the shape of ``o`` (``update_shape``), always by ``o2._id`` with upsert:
  ``replace`` (no ``$`` field: a full replacement), ``modifiers`` (``$set``/``$unset``/... with
  ``$v: 1`` or no ``$v``: sent as the update), ``delta`` (mongod's ``$v: 2`` diff: read the document,
  apply the diff as mongod does (``doc_diff``), replace it), ``fields`` (the embedded server's
  ``$v: 2`` shape ``{diff: {updatedFields, removedFields, truncatedArrays, disambiguatedPaths}}``:
  ``$set`` of the dotted paths (less those under another path it sets whole) in the order
  MongoDB 5.0+ applies them (``field_order``: new fields are appended in that order; the server's
  list does not keep it), ``$unset`` of the removed ones, then each truncation as
  ``$push: {$each: [], $slice: n}``; a path whose ``disambiguatedPaths`` parts hold a field name
  with a dot (or a ``$``) cannot be written as a dotted path and is refused).

Documents and values go to the server as the raw bytes of the entry: nothing is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import bson
from bson.raw_bson import RawBSONDocument
from pymongo.operations import DeleteOne, InsertOne, ReplaceOne, UpdateOne

from sidecar.engine.replay.bson_raw import Element, document, elements, find, subdocument
from sidecar.engine.replay.doc_diff import DiffError, validate_diff
from sidecar.engine.replay.doc_diff import apply_diff as apply_delta
from sidecar.engine.replay.field_order import update_order
from sidecar.engine.replay.units import OplogOp

WriteModel = InsertOne | ReplaceOne | UpdateOne | DeleteOne
DUPLICATE_KEY = 11000
UPDATE_OPERATORS = frozenset(
    {
        "$set", "$unset", "$inc", "$mul", "$rename", "$min", "$max", "$currentDate", "$setOnInsert",
        "$push", "$pull", "$pullAll", "$addToSet", "$pop", "$bit",
    }
)  # fmt: skip
_FIELDS_DIFF = frozenset({"updatedFields", "removedFields", "truncatedArrays", "disambiguatedPaths"})
_KINDS = {"i": "insert", "u": "update", "d": "delete"}


class UnsupportedEntry(ValueError):
    """Why an entry cannot be replayed (the caller adds its ts and namespace)."""


def _int_value(item: Element) -> int | None:
    if item.type == 0x10:
        return int.from_bytes(item.value, "little", signed=True)
    if item.type == 0x01:
        value = bson.decode(document([item.renamed("v")]))["v"]
        return int(value) if float(value).is_integer() else None
    return None


def update_shape(o: RawBSONDocument) -> str:
    """replace | modifiers | delta | fields (see the module doc), or UnsupportedEntry."""
    if _is_fields_diff(o):
        _check_fields_diff(o["diff"])
        return "fields"
    items = list(elements(o.raw))
    version = next((i for i in items if i.name == "$v"), None)
    rest = [i for i in items if i.name != "$v"]
    operators = [i.name for i in rest if i.name.startswith("$")]
    if version is None and not operators:
        return "replace"
    number = _int_value(version) if version is not None else 1
    if number == 2:
        diff = next((i for i in rest if i.name == "diff"), None)
        if diff is None or not diff.is_document or len(rest) != 1:
            raise UnsupportedEntry("a $v: 2 update without a single 'diff' document")
        names = {i.name for i in elements(diff.value)}
        if names and names <= _FIELDS_DIFF:
            _check_fields_diff(o["diff"])
            return "fields"
        try:
            validate_diff(diff.value)
        except DiffError as exc:
            raise UnsupportedEntry(str(exc)) from None
        return "delta"
    if number != 1:
        raise UnsupportedEntry(f"an update of unknown format $v: {number}")
    unknown = sorted(set(i.name for i in rest) - UPDATE_OPERATORS)
    if unknown:
        raise UnsupportedEntry(f"an update with {', '.join(unknown)} (not update operators)")
    return "modifiers"


def _is_fields_diff(o: RawBSONDocument) -> bool:
    """The embedded server's shape, read through the driver's parser (most updates it logs are)."""
    if list(o.keys()) != ["$v", "diff"] or o["$v"] != 2 or type(o["$v"]) is not int:
        return False
    diff = o["diff"]
    return isinstance(diff, RawBSONDocument) and len(diff) > 0 and set(diff.keys()) <= _FIELDS_DIFF


def _check_fields_diff(diff: RawBSONDocument) -> None:
    removed = diff.get("removedFields", [])
    truncated = diff.get("truncatedArrays", [])
    if not isinstance(diff.get("updatedFields", RawBSONDocument(document([]))), RawBSONDocument):
        raise UnsupportedEntry("updatedFields is not a document")
    if not isinstance(removed, list) or not all(isinstance(p, str) for p in removed):
        raise UnsupportedEntry("removedFields is not a list of field paths")
    if not isinstance(truncated, list) or not all(_is_truncation(t) for t in truncated):
        raise UnsupportedEntry("truncatedArrays is not a list of {field, newSize}")
    for path, parts in (diff.get("disambiguatedPaths") or {}).items():
        # Numeric parts address the same thing (index or field) as at the source: the document has the
        # same shape when the entry is replayed. A field name with a dot cannot be a path part.
        if not isinstance(parts, list) or any(
            isinstance(p, str) and ("." in p or p.startswith("$")) for p in parts
        ):
            raise UnsupportedEntry(f"the path {path!r} has a field name that a dotted path cannot address")


def _is_truncation(item: object) -> bool:
    return (
        isinstance(item, RawBSONDocument)
        and isinstance(item.get("field"), str)
        and isinstance(item.get("newSize"), int)
    )


@dataclass(frozen=True)
class Write:
    """A CRUD operation written to ``target``; ``models`` are the writes that apply it."""

    op: OplogOp
    target: str
    shape: str  # insert | delete | replace | modifiers | delta | fields

    @property
    def kind(self) -> str:
        return _KINDS[self.op.op]

    @property
    def needs_current(self) -> bool:
        """A mongod diff: the document as it is now is read first."""
        return self.shape == "delta"

    def id_filter(self) -> RawBSONDocument:
        source = self.op.o2 if self.op.op == "u" else self.op.o
        item = find(source.raw, "_id") if source is not None else None
        if item is None:
            raise UnsupportedEntry("the entry does not name the document's _id")
        return RawBSONDocument(document([item]))

    def upsert(self) -> list[WriteModel]:
        """The whole document by ``_id``, whether one is there or not (an insert's idempotent form)."""
        return [ReplaceOne(self.id_filter(), self.op.o, upsert=True)]

    def models(self, current: bytes | None = None) -> list[WriteModel]:
        """The writes; for a ``delta``, ``current`` is the document now (None: there is none)."""
        key, o = self.id_filter(), self.op.o
        if self.shape == "delete":
            return [DeleteOne(key)]
        if self.shape == "insert":
            return [InsertOne(o)]  # on a duplicate _id, ``upsert`` takes over
        if self.shape == "replace":
            return self.upsert()
        if self.shape == "modifiers":
            update = document(i for i in elements(o.raw) if i.name != "$v")
            return [UpdateOne(key, RawBSONDocument(update), upsert=True)]
        if self.shape == "delta":
            pre = current if current is not None else key.raw
            return [ReplaceOne(key, RawBSONDocument(apply_delta(pre, o["diff"].raw)), upsert=True)]
        return _fields_models(key, o["diff"])


def _covered(path: str, whole: set[str]) -> bool:
    """An ancestor of ``path`` is among the paths set whole by the same update."""
    parts = path.split(".")
    return any(".".join(parts[:n]) in whole for n in range(1, len(parts)))


def _fields_models(key: RawBSONDocument, diff: RawBSONDocument) -> list[WriteModel]:
    parts: list[Element] = []
    updated = find(diff.raw, "updatedFields")
    sets = list(elements(updated.value)) if updated is not None else []
    # After a $rename into a parent that did not exist, the embedded server lists the new parent with
    # its whole value and the leaf under it: one $set of both is a path conflict; the parent holds it.
    whole = {item.name for item in sets}
    kept = update_order(item for item in sets if not _covered(item.name, whole))
    if kept:
        parts.append(subdocument("$set", document(kept)))
    removed = [path for path in diff.get("removedFields", []) if not _covered(path, whole)]
    if removed:
        parts.append(next(elements(bson.encode({"$unset": {path: "" for path in removed}}))))
    models: list[WriteModel] = []
    if parts:
        models.append(UpdateOne(key, RawBSONDocument(document(parts)), upsert=True))
    for cut in diff.get("truncatedArrays", []):
        push = {"$push": {cut["field"]: {"$each": [], "$slice": int(cut["newSize"])}}}
        models.append(UpdateOne(key, push, upsert=True))
    return models


def crud_write(op: OplogOp, target: str) -> Write:
    """The write of an ``i``, ``u`` or ``d`` entry into ``target``, checked (UnsupportedEntry)."""
    if op.op == "u":
        write = Write(op, target, update_shape(op.o))
    else:
        write = Write(op, target, "insert" if op.op == "i" else "delete")
    write.id_filter()
    return write
