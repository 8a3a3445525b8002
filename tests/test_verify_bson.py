"""The full level's document check gives pymongo's verdict on every document, valid or damaged,
whether the fast structure walker (numpy) clears a document or pymongo decodes it (pure, no server)."""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from pathlib import Path

import bson
import pytest
from bson import Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation

from sidecar.archive import ArchiveHeader, ArchiveWriter, CollectionMetadata, DocumentChunk, Namespace
from sidecar.archive.bsoncheck import suspect_documents
from sidecar.codec.gzip_stream import gzip_writer
from sidecar.integrity.digest import content_hash
from sidecar.integrity.failure import VerifyFailed
from sidecar.integrity.scan import DECODE_OPTIONS, check_decodes, scan_archive
from sidecar.sampledata import _edge_cases, _patient

NS = Namespace("db", "c")


def _documents() -> list[bytes]:
    rng = random.Random(3)
    docs = [_patient(rng, i) for i in range(60)] + _edge_cases()
    docs += [
        {"code_scope": Code("function(){return x}", {"x": 1}), "dbref": DBRef("c", ObjectId(), "db")},
        {"old_binary": Binary(b"abcdef", 2), "uuid3": Binary(uuid.uuid4().bytes, 3)},
        {"uuid4": Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD), "big": Int64(2**62)},
        {"regex": Regex("a.b", "imx"), "ts": Timestamp(5, 6), "dec": Decimal128("1.5"), "k": MinKey()},
        {"nest": {"a": [{"b": [[[]]]}, {}, [1, 2.5, "x", None, True, False]], "m": MaxKey()}},
        {"deep": _deep(80)},  # deeper than the walker goes: pymongo checks it
        {"date": dt.datetime(1, 1, 1), "s": ""},
        {},
    ]
    return [bson.encode(d) for d in docs]


def _deep(levels: int) -> dict:
    doc: dict = {"end": 1}
    for _ in range(levels):
        doc = {"d": doc}
    return doc


def _chunk(docs: list[bytes]) -> DocumentChunk:
    starts, pos = [], 0
    for d in docs:
        starts.append(pos)
        pos += len(d)
    return DocumentChunk(NS, memoryview(b"".join(docs)), len(docs), 1000, starts)


def _pymongo_accepts(doc: bytes) -> bool:
    try:
        bson.decode(doc, DECODE_OPTIONS)
        return True
    except Exception:
        return False


def test_valid_documents_of_every_type_pass():
    docs = _documents()
    assert all(_pymongo_accepts(d) for d in docs)
    check_decodes(_chunk(docs))
    check_decodes(DocumentChunk(NS, memoryview(b"".join(docs)), len(docs), 0))  # without starts


def test_the_walker_clears_plain_documents_itself():
    pytest.importorskip("numpy")
    rng = random.Random(5)
    docs = [bson.encode(_patient(rng, i)) for i in range(200)]
    assert suspect_documents(memoryview(b"".join(docs)), _chunk(docs).starts) == []


def test_every_damaged_document_gets_pymongos_verdict():
    """Flip bytes inside documents (keeping the framing valid): whatever pymongo rejects is reported,
    at the right offset, and nothing pymongo accepts is."""
    rng = random.Random(11)
    base = _documents()
    mismatches = []
    for trial in range(400):
        docs = list(base)
        victim = rng.randrange(len(docs))
        doc = bytearray(docs[victim])
        if len(doc) <= 6:
            continue
        for _ in range(rng.choice((1, 1, 2, 3))):
            at = rng.randrange(4, len(doc) - 1)
            doc[at] = rng.choice((0, 1, 2, 3, 4, 5, 0x7F, 0xFF, rng.randrange(256)))
        docs[victim] = bytes(doc)
        chunk = _chunk(docs)
        expected_ok = _pymongo_accepts(docs[victim])
        try:
            check_decodes(chunk)
            got_ok = True
        except VerifyFailed as exc:
            got_ok = False
            assert exc.offset == chunk.offset + chunk.starts[victim]
            assert exc.namespace == "db.c"
        if got_ok != expected_ok:
            mismatches.append((trial, victim, expected_ok))
    assert mismatches == []


def _archive(path: Path, docs: list[bytes]) -> Path:
    """An archive of collection db.c holding ``docs`` (in two chunks) and of view db.v."""
    metadata = [CollectionMetadata("db", "c", "{}"), CollectionMetadata("db", "v", "{}", type="view")]
    with open(path, "wb") as raw, gzip_writer(raw) as gz:
        writer = ArchiveWriter(gz)
        writer.write_prelude(ArchiveHeader("8.0.4", "100.13.0"), metadata)
        writer.write_documents(NS, b"".join(docs[:2]))
        writer.write_documents(NS, b"".join(docs[2:]))
        writer.end_namespace(NS)
        writer.end_namespace(Namespace("db", "v"))
    return path


def test_a_scan_without_a_progress_or_a_cancel_of_its_callers_own(tmp_path):
    """``scan_archive(path)`` alone, as the benchmarks call it: a progress and a cancel of its own."""
    scan = scan_archive(_archive(tmp_path / "a.gz", [bson.encode({"i": i}) for i in range(5)]))
    assert scan.failure is None and scan.documents == 5 and scan.namespaces["db.c"].documents == 5


def test_a_scan_names_each_namespaces_type_and_hashes_its_content_across_chunks(tmp_path):
    docs = [bson.encode({"i": i}) for i in range(5)]
    scan = scan_archive(_archive(tmp_path / "a.gz", docs), hash_contents=True)
    assert {ns: f.type for ns, f in scan.namespaces.items()} == {"db.c": "collection", "db.v": "view"}
    assert scan.namespaces["db.c"].content_hash == content_hash(docs) == content_hash(docs[::-1])
    assert scan.namespaces["db.v"].content_hash == 0


def test_a_cancelled_scan_says_so(tmp_path):
    path = _archive(tmp_path / "a.gz", [bson.encode({"i": i}) for i in range(5)])
    cancel = threading.Event()
    cancel.set()
    failure = scan_archive(path, cancel=cancel).failure  # the full level keeps it, reads on
    assert (failure.reason, failure.check) == ("verification was cancelled", "file")
    with pytest.raises(VerifyFailed) as info:  # the quick level
        scan_archive(path, parse=False, cancel=cancel)
    assert (info.value.reason, info.value.check) == ("verification was cancelled", "file")
