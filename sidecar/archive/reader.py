"""Streaming reader of the mongodump archive format that enforces every rule of the format.

Memory stays bounded: documents come out in chunks of at most ``chunk_bytes`` (plus one document),
never a whole segment or namespace. Every error names the offset into the uncompressed stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import bson

from sidecar.archive.bsonstream import MAX_OPLOG_ENTRY_SIZE, split_documents
from sidecar.archive.crc64 import crc64_update, to_signed
from sidecar.archive.format import (
    MAGIC,
    MAX_BSON_SIZE,
    MIN_BSON_SIZE,
    ArchiveFormatError,
    ArchiveHeader,
    CollectionMetadata,
    Namespace,
)

_INT32 = struct.Struct("<i")
_READ_SIZE = 1 << 20


class ArchiveStreamError(ArchiveFormatError):
    """The stream below the archive (file, gzip) failed; ``cause`` is its exception.

    ``offset`` is where the readable data ended in the uncompressed stream.
    """

    def __init__(self, cause: BaseException, offset: int, namespace: str | None = None):
        self.cause = cause
        detail = str(cause) or type(cause).__name__
        super().__init__(
            f"the stream cannot be read past this point ({type(cause).__name__}: {detail})", offset, namespace
        )


@dataclass
class DocumentChunk:
    """Consecutive whole documents of one namespace: ``data`` is their raw BSON, concatenated."""

    namespace: Namespace
    data: memoryview
    count: int
    offset: int
    starts: list[int] | None = None  # where each document starts in ``data``

    def documents(self) -> Iterator[memoryview]:
        data = self.data
        if self.starts is not None:
            ends = [*self.starts[1:], len(data)]
            for start, end in zip(self.starts, ends, strict=True):
                yield data[start:end]
            return
        yield from split_documents(data)


@dataclass
class NamespaceEnd:
    """An EOF block: ``crc`` is the value it carries; ``offset`` is where the block starts."""

    namespace: Namespace
    crc: int
    documents: int
    bytes: int
    offset: int | None = None


@dataclass
class _NamespaceState:
    crc: int = 0
    documents: int = 0
    bytes: int = 0


@dataclass
class Prelude:
    header: ArchiveHeader
    collections: list[CollectionMetadata] = field(default_factory=list)


class _Buffer:
    """Reads a stream through a growable buffer, tracking the absolute offset."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._buf = bytearray()
        self._pos = 0
        self.consumed = 0  # absolute offset of _buf[_pos]

    def fill(self, need: int) -> bool:
        """Make ``need`` bytes available; False at end of stream with fewer bytes left."""
        while len(self._buf) - self._pos < need:
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            try:
                block = self._stream.read(max(_READ_SIZE, need))
            except Exception as exc:  # gzip/zlib/OS errors of the layer below: the data ends here
                raise ArchiveStreamError(exc, self.consumed + self.available()) from exc
            if not block:
                return False
            self._buf += block
        return True

    def available(self) -> int:
        return len(self._buf) - self._pos

    def at_eof(self) -> bool:
        return not self.fill(1)

    def peek_int32(self) -> int:
        return _INT32.unpack_from(self._buf, self._pos)[0]

    def take(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            chunk = bytes(view[self._pos : self._pos + n])
        self._pos += n
        self.consumed += n
        return chunk

    def raw(self) -> tuple[bytearray, int, int]:
        """The buffer itself, where the unread bytes start and end (valid until the next fill)."""
        return self._buf, self._pos, len(self._buf)

    def view(self, n: int) -> memoryview:
        return memoryview(self._buf)[self._pos : self._pos + n]

    def skip(self, n: int) -> None:
        self._pos += n
        self.consumed += n


class ArchiveReader:
    """Iterate an uncompressed archive stream: ``read_prelude()`` then ``events()``."""

    def __init__(self, stream: BinaryIO, *, chunk_bytes: int = 4 << 20, check_crc: bool = True):
        self._buf = _Buffer(stream)
        self._chunk_bytes = chunk_bytes
        self._check_crc = check_crc
        self.prelude: Prelude | None = None
        self._states: dict[Namespace, _NamespaceState] = {}
        self._finished: set[Namespace] = set()
        self._current: Namespace | None = None  # the namespace whose segment is being read

    @property
    def offset(self) -> int:
        return self._buf.consumed

    def read_prelude(self) -> Prelude:
        if self._buf.at_eof():
            raise ArchiveFormatError("the archive stream is empty (0 bytes)", 0)
        if not self._buf.fill(4) or self._buf.view(4) != MAGIC:
            seen = bytes(self._buf.view(min(4, self._buf.available()))).hex()
            hint = "; it is gzip-compressed" if seen.startswith("1f8b") else ""
            raise ArchiveFormatError(
                f"stream does not appear to be a mongodump archive (bad magic {seen or 'none'}, "
                f"expected {MAGIC.hex()}{hint})",
                0,
            )
        self._buf.skip(4)
        header_doc = self._read_document("archive header")
        if header_doc is None:
            raise ArchiveFormatError("terminator where the archive header was expected", self.offset - 4)
        header = _decode_header(header_doc, self.offset - len(header_doc))
        prelude = Prelude(header)
        while (doc := self._read_document("collection metadata")) is not None:
            prelude.collections.append(_decode_metadata(doc, self.offset - len(doc)))
        for meta in prelude.collections:
            if meta.namespace in self._states:
                raise ArchiveFormatError("namespace listed twice in the prelude", None, str(meta.namespace))
            self._states[meta.namespace] = _NamespaceState()
        self.prelude = prelude
        return prelude

    def events(self) -> Iterator[DocumentChunk | NamespaceEnd]:
        """Segments' documents as chunks and one NamespaceEnd per EOF block, in stream order.

        Every error names the offset; errors inside a segment also name its namespace.
        """
        try:
            yield from self._events()
        except ArchiveFormatError as exc:
            if exc.namespace is not None or self._current is None:
                raise
            ns = str(self._current)
            if isinstance(exc, ArchiveStreamError):
                raise ArchiveStreamError(exc.cause, exc.offset, ns) from exc.cause
            raise ArchiveFormatError(exc.reason, exc.offset, ns) from None

    def _events(self) -> Iterator[DocumentChunk | NamespaceEnd]:
        if self.prelude is None:
            self.read_prelude()
        while not self._buf.at_eof():
            start = self.offset
            doc = self._read_document("namespace header")
            if doc is None:
                raise ArchiveFormatError("terminator where a namespace header was expected", start)
            ns, eof, crc = _decode_namespace_header(doc, start)
            state = self._state_for(ns, start)
            if eof:
                yield self._end_namespace(ns, state, crc, start)
            else:
                self._current = ns  # errors inside the segment name it
                yield from self._segment_chunks(ns, state)
                self._current = None
        missing = sorted(str(ns) for ns in self._states if ns not in self._finished)
        if missing:
            raise ArchiveFormatError(
                f"archive finished before all collections were seen: {', '.join(missing)} (no EOF block)",
                self.offset,
                missing[0] if len(missing) == 1 else None,
            )

    def _state_for(self, ns: Namespace, offset: int) -> _NamespaceState:
        if ns in self._finished:
            raise ArchiveFormatError("namespace header for an already finished namespace", offset, str(ns))
        state = self._states.get(ns)
        if state is None:
            raise ArchiveFormatError("namespace not listed in the prelude", offset, str(ns))
        return state

    def _end_namespace(self, ns: Namespace, state: _NamespaceState, crc: int, start: int) -> NamespaceEnd:
        if self._check_crc and to_signed(state.crc) != crc:
            raise ArchiveFormatError(
                f"CRC mismatch: the EOF block says {crc}, the documents give {to_signed(state.crc)}",
                start,
                str(ns),
            )
        if self._read_document("terminator after EOF block") is not None:
            raise ArchiveFormatError("EOF block is not followed by a terminator", self.offset, str(ns))
        self._finished.add(ns)
        return NamespaceEnd(ns, crc, state.documents, state.bytes, start)

    def _segment_chunks(self, ns: Namespace, state: _NamespaceState) -> Iterator[DocumentChunk]:
        # The hot loop of every verify and restore: plain local variables over the buffer's bytes,
        # refilled only when a length or a document crosses its end.
        buf = self._buf
        name = str(ns)
        max_size = MAX_OPLOG_ENTRY_SIZE if ns.is_oplog else MAX_BSON_SIZE
        limit = self._chunk_bytes
        unpack = _INT32.unpack_from
        while True:
            chunk_start = self.offset
            size = count = 0
            starts: list[int] = []
            terminated = False
            while True:
                data, pos, end = buf.raw()
                pos += size
                need = 0
                while size < limit:
                    if pos + 4 > end:
                        need = size + 4
                        break
                    length = unpack(data, pos)[0]
                    if length == -1:
                        terminated = True
                        break
                    if length < MIN_BSON_SIZE or length > max_size:
                        _check_length(length, chunk_start + size, name, max_size)
                    if pos + length > end:
                        need = size + length
                        break
                    if data[pos + length - 1]:
                        raise ArchiveFormatError("document does not end with 0x00", chunk_start + size, name)
                    starts.append(size)
                    pos += length
                    size += length
                    count += 1
                if not need:
                    break
                if not buf.fill(need):
                    what = "segment" if need == size + 4 else "document"
                    raise ArchiveFormatError(f"archive ends inside a {what}", chunk_start + size, name)
            if count:
                chunk = memoryview(buf.take(size))
                if self._check_crc:
                    state.crc = crc64_update(state.crc, chunk)
                state.documents += count
                state.bytes += size
                yield DocumentChunk(ns, chunk, count, chunk_start, starts)
            if terminated:
                buf.skip(4)
                return

    def _read_document(self, what: str) -> bytes | None:
        """One BSON document, or None for a terminator."""
        start = self.offset
        if not self._buf.fill(4):
            raise ArchiveFormatError(f"archive ends where a {what} was expected", start)
        length = self._buf.peek_int32()
        if length == -1:
            self._buf.skip(4)
            return None
        _check_length(length, start, None)
        if not self._buf.fill(length):
            raise ArchiveFormatError(f"archive ends inside a {what}", start)
        doc = self._buf.take(length)
        if doc[-1] != 0:
            raise ArchiveFormatError(f"{what} does not end with 0x00", start)
        return doc


def _check_length(length: int, offset: int, namespace: str | None, maximum: int = MAX_BSON_SIZE) -> None:
    if not MIN_BSON_SIZE <= length <= maximum:
        raise ArchiveFormatError(
            f"invalid BSON length {length} (must be {MIN_BSON_SIZE}..{maximum})", offset, namespace
        )


def _decode(doc: bytes, what: str, offset: int) -> dict:
    try:
        return bson.decode(doc)
    except Exception as exc:  # bson raises several unrelated types for malformed input
        raise ArchiveFormatError(f"{what} is not valid BSON: {exc}", offset) from exc


def _expect_fields(doc: dict, fields: list[str], what: str, offset: int) -> None:
    if list(doc) != fields:
        raise ArchiveFormatError(f"{what} has fields {list(doc)}, expected {fields}", offset)


def _decode_header(raw: bytes, offset: int) -> ArchiveHeader:
    doc = _decode(raw, "archive header", offset)
    _expect_fields(
        doc, ["concurrent_collections", "version", "server_version", "tool_version"], "archive header", offset
    )
    return ArchiveHeader(**doc)  # exactly its fields, checked above


def _decode_metadata(raw: bytes, offset: int) -> CollectionMetadata:
    doc = _decode(raw, "collection metadata", offset)
    if not {"db", "collection"} <= doc.keys():
        raise ArchiveFormatError(f"collection metadata lacks db/collection: {list(doc)}", offset)
    return CollectionMetadata(
        db=doc["db"],
        collection=doc["collection"],
        metadata=doc.get("metadata", ""),
        type=doc.get("type", ""),
        size=doc.get("size", 0),
    )


def _decode_namespace_header(raw: bytes, offset: int) -> tuple[Namespace, bool, int]:
    doc = _decode(raw, "namespace header", offset)
    _expect_fields(doc, ["db", "collection", "EOF", "CRC"], "namespace header", offset)
    return Namespace(doc["db"], doc["collection"]), bool(doc["EOF"]), int(doc["CRC"])
