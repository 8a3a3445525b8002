"""The mongodump ``--archive`` stream format: writer, reader and CRC-64. Pure: bytes in, bytes out."""

from sidecar.archive.format import (
    ArchiveFormatError,
    ArchiveHeader,
    CollectionMetadata,
    Namespace,
)
from sidecar.archive.reader import ArchiveReader, DocumentChunk, NamespaceEnd
from sidecar.archive.writer import ArchiveWriter

__all__ = [
    "ArchiveFormatError",
    "ArchiveHeader",
    "ArchiveReader",
    "ArchiveWriter",
    "CollectionMetadata",
    "DocumentChunk",
    "Namespace",
    "NamespaceEnd",
]
