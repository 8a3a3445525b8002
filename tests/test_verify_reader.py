"""The hardened reader rules that verify and restore rely on (pure bytes, no server)."""

from __future__ import annotations

import gzip
import io

import bson
import pytest

from sidecar.archive import (
    ArchiveFormatError,
    ArchiveHeader,
    ArchiveReader,
    ArchiveWriter,
    CollectionMetadata,
)
from sidecar.archive.format import MAX_BSON_SIZE, TERMINATOR, Namespace, encode_namespace_header
from sidecar.archive.reader import ArchiveStreamError, NamespaceEnd

A = Namespace("db", "a")
OPLOG = Namespace("", "oplog")


def _archive(namespaces=(A,), build=None) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    writer.write_prelude(
        ArchiveHeader("8.0.0", "test"), [CollectionMetadata(ns.db, ns.collection, "{}") for ns in namespaces]
    )
    if build is None:
        writer.write_documents(A, b"".join(bson.encode({"v": v}) for v in range(100)))
        writer.end_namespace(A)
    else:
        build(writer)
    return out.getvalue()


def _read(stream) -> list:
    reader = ArchiveReader(stream)
    reader.read_prelude()
    return list(reader.events())


def test_empty_stream_says_empty():
    with pytest.raises(ArchiveFormatError, match="empty") as info:
        _read(io.BytesIO(b""))
    assert info.value.offset == 0


def test_bad_magic_shows_the_bytes_and_hints_at_gzip():
    with pytest.raises(ArchiveFormatError, match=r"bad magic 1f8b.*gzip-compressed"):
        _read(io.BytesIO(gzip.compress(b"x")))
    with pytest.raises(ArchiveFormatError, match=r"bad magic 68656c6c, expected 6de29981"):
        _read(io.BytesIO(b"hello world"))


def test_errors_inside_a_segment_name_the_namespace():
    data = _archive()
    cut = data[: len(data) - 200]  # ends inside A's segment
    with pytest.raises(ArchiveFormatError) as info:
        _read(io.BytesIO(cut))
    assert info.value.namespace == "db.a"
    assert "namespace 'db.a'" in str(info.value)


def test_a_failing_stream_becomes_an_error_with_offset_and_namespace():
    data = _archive()
    truncated = gzip.compress(data)[:-30]
    with pytest.raises(ArchiveStreamError) as info:
        _read(gzip.GzipFile(fileobj=io.BytesIO(truncated)))
    assert isinstance(info.value.cause, EOFError)
    assert info.value.offset is not None and info.value.offset <= len(data)
    assert isinstance(info.value, ArchiveFormatError)


def test_a_single_missing_eof_block_is_named():
    data = _archive(build=lambda w: w.write_documents(A, bson.encode({"v": 1})))
    data += TERMINATOR  # the segment is closed, the EOF block never comes
    with pytest.raises(ArchiveFormatError, match=r"db\.a \(no EOF block\)") as info:
        _read(io.BytesIO(data))
    assert info.value.namespace == "db.a"
    assert info.value.offset == len(data)


def test_eof_events_carry_the_offset_of_their_block():
    data = _archive()
    events = _read(io.BytesIO(data))
    end = next(e for e in events if isinstance(e, NamespaceEnd))
    eof_header = encode_namespace_header(A, eof=True, crc=end.crc)
    assert end.offset == data.rindex(eof_header)


def test_oplog_entries_may_exceed_16_mib_slightly_but_documents_may_not():
    big = bson.encode({"o": b"x" * (MAX_BSON_SIZE + 1000)})
    assert MAX_BSON_SIZE < len(big) < MAX_BSON_SIZE + 16 * 1024

    def oplog(w: ArchiveWriter) -> None:
        w.write_documents(OPLOG, big)
        w.end_namespace(OPLOG)

    events = _read(io.BytesIO(_archive((OPLOG,), oplog)))
    assert events[-1].documents == 1

    def collection(w: ArchiveWriter) -> None:
        w.write_documents(A, big)
        w.end_namespace(A)

    with pytest.raises(ArchiveFormatError, match="invalid BSON length"):
        _read(io.BytesIO(_archive((A,), collection)))
