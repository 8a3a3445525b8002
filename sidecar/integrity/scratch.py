"""Scratch sets for the ``pitr`` level: the databases one restore writes, their facts, their differences.

A ``ScratchSet`` renames every source database to ``sidecar_drill_<tag>_<db>`` (the drill's names, so
a crashed check's leftovers are dropped by the next drill or check). ``collection_facts`` reads what
the server holds per source namespace: type and options, document count and content hash, indexes.
Where two sets' documents differ, ``differing_ids`` names the documents and ``writers`` the slices
whose entries wrote them.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bson
import pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.archive.bsonstream import split_documents
from sidecar.engine.namespaces import split_namespace
from sidecar.engine.replay.units import flatten
from sidecar.integrity.compare import Wording, comparable, index_differences, index_signatures
from sidecar.integrity.digest import server_content_hash
from sidecar.integrity.drill import DRILL_PREFIX, drill_database_name

MAX_DIFFERING = 5
REPLAYED = Wording(  # the replayed set (have) against the next base restored (want)
    missing="{ns}: index {name} is missing after the replay",
    unexpected="{ns}: index {name} exists after the replay only",
    differs="{ns}: index {name} is {have} after the replay, {want} in the base",
)


@dataclass
class ScratchSet:
    tag: str  # the part of the names after the drill prefix: job id and set
    databases: dict[str, str] = field(default_factory=dict)  # target database -> source database

    @property
    def prefix(self) -> str:
        return f"{DRILL_PREFIX}{self.tag}_"

    def rename(self, ns: str) -> str:
        db, coll = split_namespace(ns)
        target = drill_database_name(self.tag, db)
        self.databases[target] = db
        return f"{target}.{coll}"

    def target(self, ns: str) -> tuple[str, str]:
        """(target database, collection) of a source namespace."""
        return split_namespace(self.rename(ns))


def collection_facts(client: pymongo.MongoClient, scratch: ScratchSet) -> dict[str, dict[str, Any]]:
    """Source namespace -> type, options, documents, content hash, indexes (views: type and options)."""
    facts: dict[str, dict[str, Any]] = {}
    for target, source in sorted(scratch.databases.items()):
        db = client[target]
        for info in db.list_collections():
            name = str(info["name"])
            if name.startswith("system."):
                continue
            item: dict[str, Any] = {
                "type": info.get("type", "collection"),
                "options": comparable(info.get("options", {})),
            }
            if item["type"] != "view":
                item["documents"], item["hash"] = server_content_hash(db[name])
                item["indexes"] = index_signatures(db[name].list_indexes())
            facts[f"{source}.{name}"] = item
    return facts


def compare_facts(
    replayed: dict[str, dict[str, Any]], restored: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """Source namespace -> its differences (``replayed``: base N-1 and the slices; ``restored``: base N)."""
    out: dict[str, list[str]] = {}
    for ns in sorted(set(replayed) | set(restored)):
        a, b = replayed.get(ns), restored.get(ns)
        if a is None or b is None:
            where = "after the replay only" if b is None else "in the base only"
            out[ns] = [f"{ns}: exists {where}"]
            continue
        problems = []
        if a["type"] != b["type"] or a["options"] != b["options"]:
            problems.append(
                f"{ns}: {a['type']} {a['options']} after the replay, {b['type']} {b['options']} in the base"
            )
        if a["type"] != "view" and b["type"] != "view":
            if a["documents"] != b["documents"]:
                problems.append(
                    f"{ns}: {a['documents']} documents after the replay, {b['documents']} in the base"
                )
            elif a["hash"] != b["hash"]:
                problems.append(f"{ns}: the content hash of its documents differs")
            problems += index_differences(ns, a["indexes"], b["indexes"], REPLAYED)
        if problems:
            out[ns] = problems
    return out


def _id_key(value: Any) -> bytes:
    return bson.encode({"_id": value})


def _documents(coll: pymongo.collection.Collection) -> Iterator[RawBSONDocument]:
    for batch in coll.find_raw_batches({}, batch_size=1000):
        for raw in split_documents(batch):
            yield RawBSONDocument(bytes(raw))


def differing_ids(first: pymongo.collection.Collection, second: pymongo.collection.Collection) -> list[Any]:
    """The ``_id`` of up to MAX_DIFFERING documents that are not byte for byte the same in both."""
    seen = {_id_key(doc["_id"]): (doc["_id"], hashlib.sha256(doc.raw).digest()) for doc in _documents(first)}
    out: list[Any] = []
    for doc in _documents(second):
        found = seen.pop(_id_key(doc["_id"]), None)
        if found is None or found[1] != hashlib.sha256(doc.raw).digest():
            out.append(doc["_id"])
        if len(out) >= MAX_DIFFERING:
            return out
    return out + [value for value, _ in list(seen.values())[: MAX_DIFFERING - len(out)]]


def only_order_differs(
    first: pymongo.collection.Collection, second: pymongo.collection.Collection, ids: list[Any]
) -> bool:
    """Whether each of these documents holds the same fields and values on both sides, in another
    order (what the embedded server's update entries can cause: docs/pitr-replay.md, Limits)."""
    for value in ids:
        a, b = first.find_one({"_id": value}), second.find_one({"_id": value})
        if a is None or b is None or a != b:
            return False
    return bool(ids)


def _written_id(op: Any) -> Any:
    target = op.o2 if op.op == "u" else op.doc.get("o")
    return target.get("_id") if isinstance(target, RawBSONDocument) else None


def writers(entries: Iterable[tuple[str, bytes]], ns: str, ids: list[Any]) -> Counter[str]:
    """Slice file name -> how many of its entries wrote one of these documents of ``ns``."""
    keys = {_id_key(value) for value in ids}
    found: Counter[str] = Counter()
    for name, raw in entries:
        doc = RawBSONDocument(raw)
        ts = doc.get("ts") or Timestamp(0, 0)
        for op in flatten(ts, doc):
            if op.ns == ns and op.op in ("i", "u", "d") and (written := _written_id(op)) is not None:
                found[name] += _id_key(written) in keys
    return +found
