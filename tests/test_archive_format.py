"""The archive writer and reader against the rules of the mongodump archive format (pure bytes)."""

from __future__ import annotations

import io
import struct

import bson
import pytest

from sidecar.archive import (
    ArchiveFormatError,
    ArchiveHeader,
    ArchiveReader,
    ArchiveWriter,
    CollectionMetadata,
)
from sidecar.archive.crc64 import crc64_update, to_signed
from sidecar.archive.format import MAGIC, TERMINATOR, Namespace, encode_namespace_header

A, B = Namespace("db", "a"), Namespace("db", "b")


def _archive(build) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    writer.write_prelude(
        ArchiveHeader("8.0.0", "test"), [CollectionMetadata(ns.db, ns.collection, "{}") for ns in (A, B)]
    )
    build(writer)
    return out.getvalue()


def _docs(*values: int) -> bytes:
    return b"".join(bson.encode({"v": v}) for v in values)


def _read_all(data: bytes) -> list:
    reader = ArchiveReader(io.BytesIO(data))
    reader.read_prelude()
    return list(reader.events())


def test_crc64_xz_check_value():
    assert crc64_update(0, b"123456789") == 0x995DC9BBDF1939FA
    assert crc64_update(crc64_update(0, b"12345"), b"6789") == 0x995DC9BBDF1939FA
    assert to_signed(0x995DC9BBDF1939FA) < 0


def test_prelude_layout_and_field_order():
    data = _archive(lambda w: (w.end_namespace(A), w.end_namespace(B)))
    assert data[:4] == MAGIC == bytes.fromhex("6de29981")
    header_len = struct.unpack_from("<i", data, 4)[0]
    header = bson.decode(data[4 : 4 + header_len])
    assert list(header) == ["concurrent_collections", "version", "server_version", "tool_version"]
    assert header["version"] == "0.1"
    meta_len = struct.unpack_from("<i", data, 4 + header_len)[0]
    meta = bson.decode(data[4 + header_len : 4 + header_len + meta_len])
    assert list(meta) == ["db", "collection", "metadata", "size", "type"]
    assert meta["size"] == 0


def test_empty_namespace_gets_an_empty_segment_then_eof():
    data = _archive(lambda w: (w.end_namespace(A), w.end_namespace(B)))
    expected_tail = b"".join(
        encode_namespace_header(ns, eof=False)
        + TERMINATOR
        + encode_namespace_header(ns, eof=True, crc=0)
        + TERMINATOR
        for ns in (A, B)
    )
    assert data.endswith(expected_tail)


def test_interleaved_segments_and_crc_across_segments():
    def build(w: ArchiveWriter) -> None:
        w.write_documents(A, _docs(1, 2))
        w.write_documents(B, _docs(10))
        w.write_documents(A, _docs(3))
        w.end_namespace(B)
        w.end_namespace(A)

    events = _read_all(_archive(build))
    ends = {str(e.namespace): e for e in events if not hasattr(e, "data")}
    assert ends["db.a"].documents == 3
    assert ends["db.a"].crc == to_signed(crc64_update(0, _docs(1, 2, 3)))
    chunks = [bytes(d) for e in events if hasattr(e, "data") for d in e.documents()]
    assert chunks == [bson.encode({"v": v}) for v in (1, 2, 10, 3)]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"\x00" * 4 + d[4:], "bad magic"),
        (lambda d: d[:-4], "archive ends where a terminator after EOF block was expected"),
        (lambda d: d[: len(d) // 2], "archive ends"),
    ],
)
def test_reader_rejects_broken_streams(mutate, message):
    data = _archive(lambda w: (w.write_documents(A, _docs(1, 2)), w.end_namespace(A), w.end_namespace(B)))
    with pytest.raises(ArchiveFormatError, match=message):
        _read_all(mutate(data))


def test_reader_rejects_namespace_reopened_after_eof():
    def build(w: ArchiveWriter) -> None:
        w.end_namespace(A)
        w.end_namespace(B)

    data = _archive(build) + encode_namespace_header(A, eof=False) + _docs(1) + TERMINATOR
    with pytest.raises(ArchiveFormatError, match="already finished") as info:
        _read_all(data)
    assert info.value.namespace == "db.a"
    assert info.value.offset == len(data) - len(encode_namespace_header(A, eof=False) + _docs(1) + TERMINATOR)


def test_reader_rejects_a_namespace_that_never_ends():
    data = _archive(lambda w: (w.write_documents(A, _docs(1)), w.end_namespace(A)))
    with pytest.raises(ArchiveFormatError, match=r"archive finished before all collections were seen: db\.b"):
        _read_all(data)


def test_reader_rejects_bad_document_length_and_crc():
    good = _archive(lambda w: (w.write_documents(A, _docs(7)), w.end_namespace(A), w.end_namespace(B)))
    doc = _docs(7)
    at = good.index(doc)
    too_long = good[:at] + struct.pack("<i", 17 * 1024 * 1024) + good[at + 4 :]
    with pytest.raises(ArchiveFormatError, match="invalid BSON length") as info:
        _read_all(too_long)
    assert info.value.offset == at
    flipped = bytearray(good)
    flipped[at + len(doc) - 2] ^= 0xFF  # inside the value, the document still ends with 0x00
    with pytest.raises(ArchiveFormatError, match="CRC mismatch") as info:
        _read_all(bytes(flipped))
    assert info.value.namespace == "db.a"


def test_writer_refuses_undeclared_or_finished_namespaces():
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    writer.write_prelude(ArchiveHeader("8.0", "t"), [CollectionMetadata("db", "a", "{}")])
    with pytest.raises(ValueError, match="not in the archive prelude"):
        writer.write_documents(B, _docs(1))
    writer.end_namespace(A)
    with pytest.raises(ValueError, match="already reached its EOF"):
        writer.write_documents(A, _docs(1))
