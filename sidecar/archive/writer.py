"""Writes the mongodump archive stream: prelude, interleaved segments, one EOF block per namespace."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from sidecar.archive.crc64 import crc64_update, to_signed
from sidecar.archive.format import (
    MAGIC,
    TERMINATOR,
    ArchiveHeader,
    CollectionMetadata,
    Namespace,
    encode_namespace_header,
)


class ArchiveWriter:
    """Not thread-safe: one thread owns the writer, producers hand it batches.

    Consecutive batches of the same namespace share a segment, as mongodump's buffers do; switching
    namespace closes the open segment with a terminator first.
    """

    def __init__(self, out: BinaryIO):
        self._out = out
        self._crc: dict[Namespace, int] = {}  # of each namespace the prelude declares
        self._finished: set[Namespace] = set()
        self._open: Namespace | None = None

    def write_prelude(self, header: ArchiveHeader, collections: Iterable[CollectionMetadata]) -> None:
        parts = [MAGIC, header.encode()]
        for meta in collections:
            self._crc[meta.namespace] = 0
            parts.append(meta.encode())
        parts.append(TERMINATOR)
        self._out.write(b"".join(parts))

    def write_documents(self, ns: Namespace, raw_documents: bytes | memoryview) -> None:
        """Append concatenated raw BSON documents of one namespace."""
        self._check_writable(ns)
        if not raw_documents:
            return
        if self._open != ns:
            self._close_segment()
            self._out.write(encode_namespace_header(ns, eof=False))
            self._open = ns
        self._crc[ns] = crc64_update(self._crc[ns], raw_documents)
        self._out.write(raw_documents)

    def end_namespace(self, ns: Namespace) -> int:
        """Write the namespace's EOF block; returns the signed CRC it carries."""
        self._check_writable(ns)
        if self._open != ns:
            # A namespace without documents still gets one empty segment, as mongodump writes it.
            self._close_segment()
            self._out.write(encode_namespace_header(ns, eof=False))
        self._out.write(TERMINATOR)
        self._open = None
        crc = to_signed(self._crc[ns])
        self._out.write(encode_namespace_header(ns, eof=True, crc=crc) + TERMINATOR)
        self._finished.add(ns)
        return crc

    def _close_segment(self) -> None:
        if self._open is not None:
            self._out.write(TERMINATOR)
            self._open = None

    def _check_writable(self, ns: Namespace) -> None:
        if ns not in self._crc:
            raise ValueError(f"namespace {ns} is not in the archive prelude")
        if ns in self._finished:
            raise ValueError(f"namespace {ns} already reached its EOF")
