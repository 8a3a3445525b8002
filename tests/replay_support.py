"""Helpers of the oplog replay tests (no tests here): the server's own oplog as raw entries, and
snapshots of a database (raw documents, indexes, options) to compare a replay with its source."""

from __future__ import annotations

from typing import Any

import bson
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.timestamp import Timestamp

from sidecar.engine.namespaces import Renamer
from sidecar.engine.replay.engine import ReplayOptions
from sidecar.engine.replay.scope import ReplayScope

RAW = CodecOptions(document_class=RawBSONDocument)


def oplog(client: pymongo.MongoClient) -> pymongo.collection.Collection:
    return client.local.get_collection("oplog.rs", codec_options=RAW)


def newest_ts(client: pymongo.MongoClient) -> Timestamp:
    return next(oplog(client).find().sort("$natural", -1).limit(1))["ts"]


def entries_since(client: pymongo.MongoClient, ts: Timestamp) -> list[bytes]:
    """The raw oplog entries after ``ts``, in order."""
    return [bytes(e.raw) for e in oplog(client).find({"ts": {"$gt": ts}}).sort("$natural", 1)]


def decoded(entries: list[bytes]) -> list[dict[str, Any]]:
    return [bson.decode(e) for e in entries]


def renamed(source_db: str, target_db: str, **options: Any) -> ReplayOptions:
    """Replay ``source_db`` (only) into ``target_db``."""
    scope = ReplayScope(Renamer([f"{source_db}.*"], [f"{target_db}.*"]), (f"{source_db}.*",))
    return ReplayOptions(scope=scope, **options)


def _clean(spec: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(spec).items() if k not in ("ns", "uuid")}


def snapshot(client: pymongo.MongoClient, db_name: str) -> dict[str, Any]:
    """Every collection of ``db_name``: its type and options, its indexes and its raw documents by _id."""
    db = client[db_name]
    out: dict[str, Any] = {}
    for info in db.list_collections():
        name = info["name"]
        item: dict[str, Any] = {"type": info.get("type"), "options": _clean(info.get("options", {}))}
        if info.get("type") != "view":
            coll = db.get_collection(name, codec_options=RAW)
            item["indexes"] = sorted(
                (_clean(ix) for ix in db[name].list_indexes()), key=lambda ix: ix["name"]
            )
            item["documents"] = [bytes(d.raw) for d in coll.find(sort=[("_id", 1)])]
        out[name] = item
    return out


def entry(ts: Timestamp, op: str, ns: str, o: Any, **more: Any) -> bytes:
    """A hand-built oplog entry, as mongod writes one (fields in mongod's order)."""
    doc = SON([("op", op), ("ns", ns)])
    if "ui" in more:
        doc["ui"] = more.pop("ui")
    doc["o"] = o
    if "o2" in more:
        doc["o2"] = more.pop("o2")
    doc["ts"] = ts
    doc["t"] = 1
    doc["v"] = 2
    doc.update(more)
    return bson.encode(doc)
