"""The one walker over concatenated BSON documents (a server batch, a chunk of an archive, an oplog
slice, a spool of oplog entries): each document's first four bytes are its length, little-endian.
``split_documents`` walks bytes in memory, ``count_documents`` counts a batch, ``read_documents``
walks a binary stream one document at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from sidecar.archive.format import MAX_BSON_SIZE, MIN_BSON_SIZE

# mongorestore reads oplog entries with 16 KiB of headroom over the 16 MiB document limit.
MAX_OPLOG_ENTRY_SIZE = MAX_BSON_SIZE + 16 * 1024
_INT32 = struct.Struct("<i")


class CutDocument(ValueError):
    """A length that does not fit: the stream is cut or damaged at document ``number`` (from 1),
    which starts at byte ``offset`` and claims ``size`` bytes (-1: fewer than four bytes were left)."""

    def __init__(self, number: int, offset: int, size: int):
        super().__init__(f"document {number} at byte {offset} has a length of {size}")
        self.number, self.offset, self.size = number, offset, size


def split_documents(data: memoryview | bytes) -> Iterator[memoryview]:
    """The documents of concatenated raw BSON held in memory; CutDocument where one does not fit."""
    view, pos, number = memoryview(data), 0, 0
    end = len(view)
    while pos < end:
        number += 1
        size = _INT32.unpack_from(view, pos)[0] if pos + 4 <= end else -1
        if size < MIN_BSON_SIZE or pos + size > end:
            raise CutDocument(number, pos, size)
        yield view[pos : pos + size]
        pos += size


def count_documents(data: bytes | memoryview) -> int:
    """How many documents a server's batch holds (trusted lengths: the dump's hot loop, unchecked)."""
    count, pos, end = 0, 0, len(data)
    unpack = _INT32.unpack_from
    while pos < end:
        pos += unpack(data, pos)[0]
        count += 1
    return count


def read_documents(stream: BinaryIO, max_size: int = MAX_OPLOG_ENTRY_SIZE) -> Iterator[bytes]:
    """The documents of a binary stream, read one at a time; CutDocument where the stream ends
    inside one or a length is out of range."""
    offset = number = 0
    while head := stream.read(4):
        number += 1
        size = _INT32.unpack(head)[0] if len(head) == 4 else -1
        if not MIN_BSON_SIZE <= size <= max_size:
            raise CutDocument(number, offset, size)
        body = stream.read(size - 4)
        if len(body) != size - 4:
            raise CutDocument(number, offset, size)
        yield head + body
        offset += size
