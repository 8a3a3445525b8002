"""Constants and small value types of the mongodump archive format (see docs/archive-format.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import bson
from bson.int64 import Int64

MAGIC = struct.pack("<I", 0x8199E26D)
TERMINATOR = struct.pack("<i", -1)
FORMAT_VERSION = "0.1"
MIN_BSON_SIZE = 5
MAX_BSON_SIZE = 16 * 1024 * 1024
OPLOG_NAMESPACE = ("", "oplog")


class ArchiveFormatError(ValueError):
    """The stream breaks a rule of the archive format; ``offset`` is into the uncompressed stream."""

    def __init__(self, message: str, offset: int | None = None, namespace: str | None = None):
        self.reason = message
        self.offset = offset
        self.namespace = namespace
        where = [f"namespace {namespace!r}"] if namespace is not None else []
        where += [f"offset {offset}"] if offset is not None else []
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


@dataclass(frozen=True)
class Namespace:
    db: str
    collection: str

    def __str__(self) -> str:
        return f"{self.db}.{self.collection}" if self.db else self.collection

    @property
    def is_oplog(self) -> bool:
        return (self.db, self.collection) == OPLOG_NAMESPACE


@dataclass(frozen=True)
class ArchiveHeader:
    server_version: str
    tool_version: str
    concurrent_collections: int = 4
    version: str = FORMAT_VERSION

    def encode(self) -> bytes:
        return bson.encode(
            {
                "concurrent_collections": self.concurrent_collections,
                "version": self.version,
                "server_version": self.server_version,
                "tool_version": self.tool_version,
            }
        )


@dataclass(frozen=True)
class CollectionMetadata:
    """One prelude entry. ``metadata`` is the text of the ``<coll>.metadata.json`` file."""

    db: str
    collection: str
    metadata: str
    type: str = "collection"
    size: int = 0

    @property
    def namespace(self) -> Namespace:
        return Namespace(self.db, self.collection)

    def encode(self) -> bytes:
        return bson.encode(
            {
                "db": self.db,
                "collection": self.collection,
                "metadata": self.metadata,
                "size": self.size,
                "type": self.type,
            }
        )


def encode_namespace_header(ns: Namespace, *, eof: bool, crc: int = 0) -> bytes:
    return bson.encode({"db": ns.db, "collection": ns.collection, "EOF": eof, "CRC": Int64(crc)})
