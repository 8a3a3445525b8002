"""The scan: one streaming pass over an archive's stored bytes, whatever its size.

sha256 and size of the stored bytes, gzip completeness, and (``parse``) every rule of the archive
format, every namespace's CRC-64, every document decoded and optionally content-hashed. The bytes
come through ``sidecar.store.source``, the one reader of archives.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from sidecar.archive import ArchiveFormatError, ArchiveReader, DocumentChunk
from sidecar.archive.bsoncheck import suspect_documents
from sidecar.archive.crc64 import crc64_update, to_signed
from sidecar.archive.reader import ArchiveStreamError, Prelude
from sidecar.integrity.digest import combine, content_hash
from sidecar.integrity.failure import VerifyFailed
from sidecar.progress import Progress
from sidecar.store.source import ArchiveReadError, ArchiveSource, read_failure

# Full decode without false alarms: invalid UTF-8 (old drivers) and dates outside datetime's range
# are legal BSON that the server stores and mongodump dumps.
DECODE_OPTIONS = CodecOptions(
    unicode_decode_error_handler="surrogateescape", datetime_conversion=DatetimeConversion.DATETIME_AUTO
)
_DECODE_BATCH_BYTES = 4 * 1024 * 1024


def as_source(archive: ArchiveSource | Path) -> ArchiveSource:
    """A source for ``archive``: itself, or the local file at that path (not decryptable)."""
    return archive if isinstance(archive, ArchiveSource) else ArchiveSource(Path(archive))


def read_failed(exc: ArchiveReadError) -> VerifyFailed:
    return VerifyFailed(str(exc), check=exc.check, offset=exc.offset)


@dataclass
class NamespaceFacts:
    type: str = "collection"
    documents: int = 0
    bytes: int = 0
    crc: int = 0
    content_hash: int = 0


@dataclass
class ArchiveScan:
    path: Path
    compressed: bool = True
    size_bytes: int = 0
    sha256: str = ""
    uncompressed_bytes: int = 0
    prelude: Prelude | None = None
    namespaces: dict[str, NamespaceFacts] = field(default_factory=dict)  # without the oplog
    oplog: NamespaceFacts | None = None
    seconds: float = 0.0
    failure: VerifyFailed | None = None  # the archive-level failure (the gzip checks went on after it)

    @property
    def documents(self) -> int:
        return sum(f.documents for f in self.namespaces.values())

    def counts(self) -> dict[str, tuple[int, int]]:
        out = {ns: (f.documents, f.bytes) for ns, f in self.namespaces.items()}
        if self.oplog is not None:
            out["oplog"] = (self.oplog.documents, self.oplog.bytes)
        return out

    def throughput_mb_s(self) -> float:
        return round(self.uncompressed_bytes / 1e6 / self.seconds, 1) if self.seconds else 0.0


# -- full decode: every document parsed ------------------------------------------------------------
#
# The walker in archive/bsoncheck.py clears well-formed documents in bulk; pymongo decodes only the
# suspects it returns, and its error is the one reported.


def _starts(chunk: DocumentChunk) -> list[int]:
    if chunk.starts is not None:
        return chunk.starts
    return list(itertools.accumulate((len(d) for d in chunk.documents()), initial=0))[:-1]


def check_decodes(*chunks: DocumentChunk) -> None:
    """Every document of the chunks parses as BSON; VerifyFailed naming the first that does not.
    Several chunks are walked as one: fewer, longer numpy steps."""
    data = chunks[0].data if len(chunks) == 1 else memoryview(b"".join(chunk.data for chunk in chunks))
    starts: list[int] = []
    owners: list[tuple[DocumentChunk, int]] = []  # each document's chunk, and where it starts in data
    base = 0
    for chunk in chunks:
        own = _starts(chunk)
        starts += [base + start for start in own]
        owners += [(chunk, base)] * len(own)
        base += len(chunk.data)
    bounds = [*starts[1:], len(data)]
    for index in suspect_documents(data, starts):
        start, stop = starts[index], bounds[index]
        try:
            bson.decode(data[start:stop], DECODE_OPTIONS)
        except Exception as exc:
            chunk, chunk_base = owners[index]
            offset = chunk.offset + start - chunk_base
            detail = str(exc).split(". Are you using", 1)[0]
            raise VerifyFailed(
                f"a document is not valid BSON ({type(exc).__name__}: {detail}) "
                f"(namespace {str(chunk.namespace)!r}, offset {offset})",
                check="archive",
                offset=offset,
                namespace=str(chunk.namespace),
            ) from None


class _DecodeBatch:
    """Chunks waiting for the document check: checked together (~4 MiB) for the walker's sake."""

    def __init__(self) -> None:
        self.chunks: list[DocumentChunk] = []
        self.size = 0

    def add(self, chunk: DocumentChunk) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk.data)
        if self.size >= _DECODE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        chunks, self.chunks, self.size = self.chunks, [], 0
        if chunks:
            check_decodes(*chunks)


def _crc_failure(ns: str, eof_offset: int | None, eof_crc: int, computed: int, manifest: Mapping | None):
    recorded = (manifest or {}).get(ns, {}).get("crc")
    where = f"(namespace {ns!r}, offset {eof_offset})"
    if recorded is not None and recorded == computed:
        reason = (
            f"the CRC field of the EOF block is damaged: it says {eof_crc}; the documents give "
            f"{computed}, which is what the catalog recorded {where}"
        )
    elif recorded is not None and recorded == eof_crc:
        reason = (
            f"the documents are damaged: their CRC-64 is {computed}, while the EOF block and the "
            f"catalog say {eof_crc} {where}"
        )
    else:
        reason = f"CRC mismatch: the EOF block says {eof_crc}, the documents give {computed} {where}"
    return VerifyFailed(
        reason,
        check="archive",
        offset=eof_offset,
        namespace=ns,
        details={"eofCrc": eof_crc, "computedCrc": computed, "catalogCrc": recorded},
    )


# -- the pass --------------------------------------------------------------------------------------


@dataclass
class _Pass:
    scan: ArchiveScan
    hash_contents: bool
    manifest: Mapping[str, Any] | None
    on_chunk: Callable[[DocumentChunk], None] | None
    state: Progress
    cancel: threading.Event

    def cancelled(self) -> None:
        if self.cancel.is_set():
            raise VerifyFailed("verification was cancelled", check="file")

    def drain(self, stream: BinaryIO) -> None:
        """Read what the parser left (all of it for a quick check): gzip's own checks run at the end."""
        scan = self.scan
        while True:
            try:
                block = stream.read(1 << 20)
            except Exception as exc:
                raise ArchiveStreamError(exc, scan.uncompressed_bytes) from exc
            if not block:
                return
            self.cancelled()
            scan.uncompressed_bytes += len(block)
            self.state.bytes = scan.uncompressed_bytes

    def parse(self, stream: BinaryIO) -> None:
        reader = ArchiveReader(stream, check_crc=False)  # CRCs are checked here, against the catalog too
        batch = _DecodeBatch()
        try:
            facts = self._prelude(reader)
            for event in reader.events():
                self.cancelled()
                if isinstance(event, DocumentChunk):
                    self._chunk(facts[str(event.namespace)], event, batch)
                else:
                    batch.flush()  # a damaged document is named before its namespace's CRC
                    self._end(facts[str(event.namespace)], str(event.namespace), event)
                self.state.bytes = reader.offset
            batch.flush()
        except ArchiveFormatError as exc:
            batch.flush()  # a damaged document before the broken spot is the first problem
            if isinstance(exc, ArchiveStreamError):
                raise
            raise VerifyFailed(
                str(exc), check="archive", offset=exc.offset, namespace=exc.namespace
            ) from None
        finally:
            self.scan.uncompressed_bytes = reader.offset

    def _prelude(self, reader: ArchiveReader) -> dict[str, NamespaceFacts]:
        scan = self.scan
        scan.prelude = reader.read_prelude()
        facts: dict[str, NamespaceFacts] = {}
        for meta in scan.prelude.collections:
            ns = str(meta.namespace)
            facts[ns] = NamespaceFacts(type=meta.type or "collection")
            if meta.namespace.is_oplog:
                scan.oplog = facts[ns]
            else:
                scan.namespaces[ns] = facts[ns]
        self.state.namespaces_total = len(facts)
        return facts

    def _chunk(self, f: NamespaceFacts, chunk: DocumentChunk, batch: _DecodeBatch) -> None:
        f.crc = crc64_update(f.crc, chunk.data)
        f.documents += chunk.count
        f.bytes += len(chunk.data)
        batch.add(chunk)
        if self.hash_contents:
            f.content_hash = combine(f.content_hash, content_hash(chunk.documents()))
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        self.state.documents += chunk.count

    def _end(self, f: NamespaceFacts, ns: str, event: Any) -> None:
        computed = to_signed(f.crc)
        if computed != event.crc:
            raise _crc_failure(ns, event.offset, event.crc, computed, self.manifest)
        f.crc = computed
        self.state.namespaces_done += 1


def scan_archive(
    archive: ArchiveSource | Path,
    *,
    parse: bool = True,
    hash_contents: bool = False,
    manifest: Mapping[str, Any] | None = None,
    on_chunk: Callable[[DocumentChunk], None] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ArchiveScan:
    """One streaming pass over ``archive`` (a source, or a local file's path).

    Raises VerifyFailed for a file that cannot be read through (file, gzip). An archive-level failure
    is not raised: it is kept in ``scan.failure`` and the rest of the file is still read, so the quick
    facts (sha256, size, gzip completeness) are known as well.
    """
    t0 = time.monotonic()
    source = as_source(archive)
    scan = ArchiveScan(source.path)
    state, cancel = progress or Progress(), cancel or threading.Event()
    work = _Pass(scan, hash_contents, manifest, on_chunk, state, cancel)
    try:
        with source.open() as opened:
            scan.compressed = opened.compressed
            try:
                if parse:
                    try:
                        work.parse(opened.data)
                    except VerifyFailed as exc:
                        scan.failure = exc
                work.drain(opened.data)
            except ArchiveStreamError as exc:
                raise VerifyFailed(
                    f"{read_failure(exc.cause)} (the readable data ends at offset {exc.offset}"
                    + (f", inside namespace {exc.namespace!r})" if exc.namespace else ")"),
                    check="gzip",
                    offset=exc.offset,
                    namespace=exc.namespace,
                ) from None
            digest = opened.finish()
    except ArchiveReadError as exc:
        raise read_failed(exc) from None
    scan.size_bytes, scan.sha256 = digest.size, digest.hexdigest()
    scan.seconds = time.monotonic() - t0
    return scan
