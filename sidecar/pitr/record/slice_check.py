"""The content check of one oplog slice, shared by ``sidecar pitr status --verify`` (and its API) and
the integrity tests: the stored bytes hash to the catalog's sha256, they are gzip (inside age when
encrypted), every entry is a valid BSON document with a ``ts`` Timestamp, the entries are in strictly
increasing timestamp order, and the first, last, count, ``prev``, raw size and namespaces match the
catalog entry.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import bson
from bson.timestamp import Timestamp

from sidecar.archive.bsonstream import CutDocument, split_documents
from sidecar.store.objects import Digest
from sidecar.store.source import ArchiveSource, read_failure


def _position(data: dict[str, Any] | None) -> Timestamp | None:
    return Timestamp(int(data["t"]), int(data["i"])) if data else None


def check_slice(source: ArchiveSource, entry: dict[str, Any]) -> str | None:
    """What is wrong with the slice ``source`` holds, measured against its catalog ``entry``; None: sound."""
    try:
        with source.pinned():  # one read of the stored bytes (a bucket copy is spooled), hashed first
            if _stored_sha256(source) != entry["sha256"]:
                return "its sha256 differs from the catalog's"
            with source.open() as stream:
                if not stream.compressed:
                    return "it is not gzip"
                data = stream.data.read()
    except Exception as exc:
        return read_failure(exc)
    return _check_entries(data, entry)


def _stored_sha256(source: ArchiveSource) -> str:
    digest = Digest()
    with source.open_stored() as stored:
        while block := stored.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_entries(data: bytes, entry: dict[str, Any]) -> str | None:
    previous = _position(entry.get("prev"))  # the first entry must come after it
    first: Timestamp | None = None
    count = 0
    namespaces: Counter[str] = Counter()
    documents = split_documents(data)
    while True:
        try:
            raw = next(documents, None)
        except CutDocument as cut:
            where = f"entry {cut.number} at byte {cut.offset} has a length of {cut.size}"
            return f"{where}: the BSON stream is cut or damaged"
        if raw is None:
            break
        count += 1
        try:
            document = bson.decode(raw)
        except Exception as exc:
            return f"entry {count} is not a valid BSON document ({type(exc).__name__}: {exc})"
        ts = document.get("ts")
        namespaces[document.get("ns") or ""] += 1
        if not isinstance(ts, Timestamp):
            return f"entry {count} has no ts timestamp"
        if previous is not None and ts <= previous:
            return f"entry {count} ({ts.time}.{ts.inc}) is not after the one before it"
        first, previous = first or ts, ts
    if count != entry["entries"]:
        return f"{count} entries, the catalog says {entry['entries']}"
    if first != _position(entry["first"]) or previous != _position(entry["last"]):
        return "its first or last entry is not the catalog's"
    if len(data) != entry.get("rawBytes", len(data)):
        return f"{len(data)} bytes of entries, the catalog says {entry['rawBytes']}"
    if dict(namespaces) != entry.get("namespaces", namespaces):
        return "the namespaces of its entries are not the catalog's"
    return None
