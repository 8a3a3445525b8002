"""Integrity tests of backup archives, and restore drills into scratch databases.

Three levels, each including the one before:

- quick: the file exists, its size and sha256 equal the catalog's, the gzip stream is complete;
- full: every document framed and decoded, every namespace's CRC-64 checked, per-namespace document
  counts and bytes equal to the catalog's manifest (a file not in the catalog: on its own merits);
- drill: the archive restored into scratch databases (``sidecar_drill_<job>_<db>``), then document
  counts, an order-independent content hash per collection, indexes, collection options and views
  compared with the archive; the scratch databases are dropped even when the drill fails midway,
  and leftovers of earlier crashed drills are dropped first.

One streaming pass over the file does quick and full together: memory stays bounded whatever the
archive size. Every failure names what broke, and where: the byte offset in the uncompressed archive
stream and the namespace.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import bson
import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from isal import igzip_threaded

from sidecar.archive import ArchiveFormatError, ArchiveReader, DocumentChunk
from sidecar.archive.bsoncheck import suspect_documents
from sidecar.archive.crc64 import crc64_update, to_signed
from sidecar.archive.format import MAGIC
from sidecar.archive.reader import ArchiveStreamError, Prelude
from sidecar.engine.encryption import AGE_MAGIC
from sidecar.jobs import utc_now
from sidecar.progress import Progress
from sidecar.store.backends import StoreError, open_stored
from sidecar.store.catalog import iso_utc

LEVELS = ("quick", "full", "drill")
DRILL_PREFIX = "sidecar_drill_"
GZIP_MAGIC = b"\x1f\x8b"
_MOD256 = 1 << 256
# Full decode without false alarms: invalid UTF-8 (old drivers) and dates outside datetime's range
# are legal BSON that the server stores and mongodump dumps.
_DECODE = CodecOptions(
    unicode_decode_error_handler="surrogateescape", datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


class VerifyFailed(Exception):
    """An integrity check failed. ``check`` is file, gzip, archive, manifest or drill."""

    def __init__(
        self,
        reason: str,
        *,
        check: str,
        offset: int | None = None,
        namespace: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.check = check
        self.offset = offset
        self.namespace = namespace
        self.details = details or {}

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"failedCheck": self.check}
        if self.offset is not None:
            out["offset"] = self.offset
        if self.namespace is not None:
            out["namespace"] = self.namespace
        out.update(self.details)
        return out


# -- reading the file ----------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Hashes and counts the file's bytes as the decompressor reads them."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.size += n
        return n or 0

    def drain(self) -> None:
        buffer = bytearray(1 << 20)
        while self.readinto(buffer):
            pass


def sniff(head: bytes) -> str:
    """gzip, archive (uncompressed) or age (encrypted); VerifyFailed for anything else."""
    if not head:
        raise VerifyFailed("the file is empty (0 bytes)", check="file", offset=0)
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == MAGIC:
        return "archive"
    if head.startswith(AGE_MAGIC[: len(head)]):
        return "age"
    shown = head[:8].decode("ascii", "replace").translate({c: "." for c in range(32)})
    raise VerifyFailed(
        f"not a gzip-compressed mongodump archive: the file starts with {head[:8].hex()} ({shown!r}); "
        f"a gzip file starts with 1f8b, an archive with {MAGIC.hex()}",
        check="gzip",
        offset=0,
    )


Identities = Callable[[], list[Any]]


@contextlib.contextmanager
def open_archive(
    path: Path, identities: Identities | None = None
) -> Iterator[tuple[BinaryIO, _HashingReader, bool]]:
    """The uncompressed archive stream of ``path``, the reader hashing the file's bytes, compressed?

    ``path`` is a local file, or a ``RemoteArchive`` (the bucket's copy of a file gone from the disk).
    It may be gzip (as mongodump --gzip writes), an uncompressed archive, or an age-encrypted gzip
    archive (decrypted with the identities ``identities()`` returns).
    """
    try:
        raw = open_stored(path)  # the local file, or the bucket's copy for a RemoteArchive
    except FileNotFoundError:
        raise VerifyFailed(f"{path} does not exist", check="file") from None
    except OSError as exc:
        raise VerifyFailed(f"cannot open {path}: {exc.strerror or exc}", check="file") from None
    except StoreError as exc:
        raise VerifyFailed(str(exc), check="file") from None
    try:
        kind = sniff(raw.read(len(AGE_MAGIC)))
        raw.seek(0)
        hashing = _HashingReader(raw)
        if kind == "archive":
            yield io.BufferedReader(hashing, 1 << 20), hashing, False
            return
        source: BinaryIO = hashing  # type: ignore[assignment]
        if kind == "age":
            source = _decrypting(hashing, path, identities)
        # Decompression runs in its own thread (ISA-L releases the GIL) while this one parses.
        with igzip_threaded.open(source, "rb", threads=1, block_size=2 << 20) as stream:
            yield stream, hashing, True
    finally:
        raw.close()


def _decrypting(hashing: _HashingReader, path: Path, identities: Identities | None) -> BinaryIO:
    from sidecar.engine.encryption import EncryptionError, decrypt_reader

    if identities is None:
        raise VerifyFailed(
            f"{path.name} is age-encrypted: set SIDECAR_AGE_IDENTITY_FILE to an identity that can decrypt it",
            check="file",
        )
    try:
        keys = identities()
    except EncryptionError as exc:
        raise VerifyFailed(str(exc), check="file") from None
    return decrypt_reader(hashing, keys, source=path.name, keys="SIDECAR_AGE_IDENTITY_FILE")


def describe_stream_error(exc: BaseException) -> str:
    """What a failure of the layers under the archive (file, age, gzip) means for the operator."""
    text = str(exc)
    if isinstance(exc, StoreError):
        return f"cannot read the stored copy: {text}"
    if type(exc).__name__ == "EncryptionError":
        return text
    if isinstance(exc, EOFError):
        return "the gzip stream is truncated: the file ends before the end of the compressed data"
    if "CRC check failed" in text:
        return "the gzip CRC-32 check failed: the compressed data is damaged"
    if "Incorrect length" in text:
        return "the gzip length check failed: the compressed data is damaged"
    if "Not a gzipped file" in text:
        return "garbage follows the gzip stream (or a second member is not gzip)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read the file: {exc.strerror or exc}"
    return f"the compressed data is damaged ({type(exc).__name__}: {text})"


# -- the scan ------------------------------------------------------------------------------------


@dataclass
class NamespaceFacts:
    type: str = "collection"
    documents: int = 0
    bytes: int = 0
    crc: int = 0
    content_hash: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"documents": self.documents, "bytes": self.bytes, "crc": self.crc, "type": self.type}


@dataclass
class ArchiveScan:
    path: Path
    compressed: bool = True
    parsed: bool = False
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


def content_hash(data: memoryview | bytes, documents: Iterator[memoryview] | None = None) -> int:
    """Order-independent hash of raw documents: the sum of their sha256 values, modulo 2**256."""
    total = 0
    sha256 = hashlib.sha256
    for doc in documents if documents is not None else _split(data):
        total += int.from_bytes(sha256(doc).digest(), "big")
    return total % _MOD256


def _split(data: memoryview | bytes) -> Iterator[memoryview]:
    view, pos = memoryview(data), 0
    while pos < len(view):
        size = int.from_bytes(view[pos : pos + 4], "little")
        yield view[pos : pos + size]
        pos += size


# -- full decode: every document parsed ------------------------------------------------------------
#
# The walker in archive/bsoncheck.py clears well-formed documents in bulk; pymongo decodes only the
# suspects it returns, and its error is the one reported.

_DECODE_BATCH_BYTES = 4 * 1024 * 1024


def _check_decodes_many(chunks: list[DocumentChunk]) -> None:
    """``_check_decodes`` over several chunks walked as one: fewer, longer numpy steps."""
    data = memoryview(b"".join(chunk.data for chunk in chunks))
    starts: list[int] = []
    owners: list[int] = []
    base = 0
    for number, chunk in enumerate(chunks):
        own = chunk.starts
        if own is None:
            own = list(itertools.accumulate((len(d) for d in chunk.documents()), initial=0))[:-1]
        starts += [base + start for start in own]
        owners += [number] * len(own)
        base += len(chunk.data)
    suspects = suspect_documents(data, starts)
    for number in sorted({owners[i] for i in suspects}):
        _check_decodes(chunks[number])


def _check_decodes(chunk: DocumentChunk) -> None:
    """Every document of the chunk parses as BSON; VerifyFailed naming the first that does not."""
    starts = chunk.starts
    if starts is None:
        starts = list(itertools.accumulate((len(d) for d in chunk.documents()), initial=0))[:-1]
    data = chunk.data
    bounds = [*starts[1:], len(data)]
    for index in suspect_documents(data, starts):
        start, stop = starts[index], bounds[index]
        try:
            bson.decode(data[start:stop], _DECODE)
        except Exception as exc:
            detail = str(exc).split(". Are you using", 1)[0]
            raise VerifyFailed(
                f"a document is not valid BSON ({type(exc).__name__}: {detail}) "
                f"(namespace {str(chunk.namespace)!r}, offset {chunk.offset + start})",
                check="archive",
                offset=chunk.offset + start,
                namespace=str(chunk.namespace),
            ) from None


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


def scan_archive(
    path: Path,
    *,
    parse: bool = True,
    decode: bool = True,
    hash_contents: bool = False,
    manifest: Mapping[str, Any] | None = None,
    on_chunk: Callable[[DocumentChunk], None] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    identities: Identities | None = None,
) -> ArchiveScan:
    """One streaming pass: sha256 and size of the file, gzip completeness, and with ``parse`` every
    rule of the archive format, every CRC, every document decoded (``decode``) and optionally hashed.

    Raises VerifyFailed for a file that cannot be read through (file, gzip). An archive-level failure
    is not raised: it is kept in ``scan.failure`` and the rest of the file is still read, so the quick
    facts (sha256, size, gzip completeness) are known as well.
    """
    t0 = time.monotonic()
    scan = ArchiveScan(Path(path), parsed=parse)
    state = progress or Progress()
    cancel = cancel or threading.Event()
    with open_archive(path, identities) as (stream, hashing, compressed):
        scan.compressed = compressed
        try:
            if parse:
                try:
                    _parse(stream, scan, state, decode, hash_contents, manifest, on_chunk, cancel)
                except VerifyFailed as exc:
                    scan.failure = exc
            _drain(stream, scan, state, cancel)
        except ArchiveStreamError as exc:
            raise VerifyFailed(
                f"{describe_stream_error(exc.cause)} (the readable data ends at offset {exc.offset}"
                + (f", inside namespace {exc.namespace!r})" if exc.namespace else ")"),
                check="gzip",
                offset=exc.offset,
                namespace=exc.namespace,
            ) from None
        hashing.drain()
        scan.size_bytes = hashing.size
        scan.sha256 = hashing.sha256.hexdigest()
    scan.seconds = time.monotonic() - t0
    return scan


def _drain(stream: BinaryIO, scan: ArchiveScan, state: Progress, cancel) -> None:
    """Read what the parser left (all of it for a quick check): gzip's own checks run at the end."""
    while True:
        try:
            block = stream.read(1 << 20)
        except Exception as exc:
            raise ArchiveStreamError(exc, scan.uncompressed_bytes) from exc
        if not block:
            return
        if cancel.is_set():
            raise VerifyFailed("verification was cancelled", check="file")
        scan.uncompressed_bytes += len(block)
        state.bytes = scan.uncompressed_bytes


class _DecodeBatch:
    """Chunks waiting for the document check: checked together (~4 MiB) for the walker's sake."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.chunks: list[DocumentChunk] = []
        self.size = 0

    def add(self, chunk: DocumentChunk) -> None:
        if not self.enabled:
            return
        self.chunks.append(chunk)
        self.size += len(chunk.data)
        if self.size >= _DECODE_BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        chunks, self.chunks, self.size = self.chunks, [], 0
        if len(chunks) == 1:
            _check_decodes(chunks[0])
        elif chunks:
            _check_decodes_many(chunks)


def _parse(stream, scan, state, decode, hash_contents, manifest, on_chunk, cancel) -> None:
    reader = ArchiveReader(stream, check_crc=False)  # CRCs are checked here, against the catalog too
    batch = _DecodeBatch(decode)
    try:
        prelude = reader.read_prelude()
        scan.prelude = prelude
        facts: dict[str, NamespaceFacts] = {}
        for meta in prelude.collections:
            facts[str(meta.namespace)] = NamespaceFacts(type=meta.type or "collection")
            if meta.namespace.is_oplog:
                scan.oplog = facts[str(meta.namespace)]
            else:
                scan.namespaces[str(meta.namespace)] = facts[str(meta.namespace)]
        state.namespaces_total = len(facts)
        for event in reader.events():
            if cancel.is_set():
                raise VerifyFailed("verification was cancelled", check="file")
            ns = str(event.namespace)
            f = facts[ns]
            if isinstance(event, DocumentChunk):
                f.crc = crc64_update(f.crc, event.data)
                f.documents += event.count
                f.bytes += len(event.data)
                batch.add(event)
                if hash_contents:
                    f.content_hash = (f.content_hash + content_hash(event.data, event.documents())) % _MOD256
                if on_chunk is not None:
                    on_chunk(event)
                state.documents += event.count
            else:
                batch.flush()  # a damaged document is named before its namespace's CRC
                computed = to_signed(f.crc)
                if computed != event.crc:
                    raise _crc_failure(ns, event.offset, event.crc, computed, manifest)
                f.crc = computed
                state.namespaces_done += 1
            state.bytes = reader.offset
        batch.flush()
    except ArchiveFormatError as exc:
        batch.flush()  # a damaged document before the broken spot is the first problem
        if isinstance(exc, ArchiveStreamError):
            raise
        raise VerifyFailed(str(exc), check="archive", offset=exc.offset, namespace=exc.namespace) from None
    finally:
        scan.uncompressed_bytes = reader.offset


# -- the levels ----------------------------------------------------------------------------------


def compare_file(scan: ArchiveScan, entry: Mapping[str, Any] | None) -> list[str]:
    """Quick-level problems against the catalog: size and sha256."""
    if not entry:
        return []
    problems = []
    if entry.get("sizeBytes") is not None and entry["sizeBytes"] != scan.size_bytes:
        problems.append(f"the file is {scan.size_bytes} bytes, the catalog recorded {entry['sizeBytes']}")
    if entry.get("sha256") and entry["sha256"] != scan.sha256:
        problems.append(f"sha256 is {scan.sha256}, the catalog recorded {entry['sha256']}")
    return problems


def compare_manifest(scan: ArchiveScan, entry: Mapping[str, Any] | None) -> list[str]:
    """Full-level problems against the catalog: the namespaces, their documents, bytes and CRCs."""
    manifest = (entry or {}).get("namespaces")
    problems: list[str] = []
    if manifest is not None:
        missing = sorted(set(manifest) - set(scan.namespaces))
        extra = sorted(set(scan.namespaces) - set(manifest))
        if missing:
            problems.append(f"namespaces in the catalog but not in the archive: {', '.join(missing)}")
        if extra:
            problems.append(f"namespaces in the archive but not in the catalog: {', '.join(extra)}")
        for ns in sorted(set(manifest) & set(scan.namespaces)):
            want, got = manifest[ns], scan.namespaces[ns]
            for key, value in (("documents", got.documents), ("bytes", got.bytes), ("crc", got.crc)):
                if want.get(key) is not None and want[key] != value:
                    problems.append(
                        f"{ns}: {key} is {value} in the archive, the catalog recorded {want[key]}"
                    )
    oplog = (entry or {}).get("oplog")
    if entry is not None and "oplog" in entry:
        has = scan.oplog.documents if scan.oplog is not None else None
        want_entries = oplog.get("entries") if oplog else None
        if want_entries != has:
            problems.append(f"the archive holds {has} oplog entries, the catalog recorded {want_entries}")
    return problems


def _record(ok: bool, reason: str | None, seconds: float, **details: Any) -> dict[str, Any]:
    return {
        "ok": ok,
        "reason": reason,
        "durationSeconds": round(seconds, 3),
        "at": iso_utc(utc_now()),
        **{k: v for k, v in details.items() if v is not None},
    }


def _first(problems: list[str]) -> str:
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


@dataclass
class VerifyReport:
    level: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # by level, each level that ran
    scan: ArchiveScan | None = None

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.records.values())

    @property
    def reason(self) -> str | None:
        for level in reversed(LEVELS):
            record = self.records.get(level)
            if record and not record["ok"]:
                return record["reason"]
        return None


def verify_archive(
    path: Path,
    entry: Mapping[str, Any] | None,
    level: str,
    *,
    job_id: str = "adhoc",
    drill_client: Callable[[], pymongo.MongoClient] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    identities: Identities | None = None,
) -> VerifyReport:
    """Run ``level`` (and the levels under it) on ``path``; ``entry`` is its catalog entry or None."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    report = VerifyReport(level)
    progress = progress or Progress()
    progress.begin("verify")
    parse = level != "quick"
    try:
        scan = scan_archive(
            path,
            parse=parse,
            hash_contents=level == "drill",
            manifest=(entry or {}).get("namespaces"),
            progress=progress,
            cancel=cancel,
            identities=identities,
        )
    except VerifyFailed as exc:  # the file cannot be read through: no level can pass
        record = _record(False, exc.reason, 0.0, sizeBytes=_size(path), **exc.as_json())
        for name in LEVELS[: LEVELS.index(level) + 1]:
            report.records[name] = dict(record)
        if level == "drill":
            report.records["drill"]["reason"] = f"not attempted: {exc.reason}"
        return report
    report.scan = scan
    file_problems = compare_file(scan, entry)
    report.records["quick"] = _record(
        not file_problems,
        _first(file_problems) if file_problems else None,
        scan.seconds,
        sizeBytes=scan.size_bytes,
        sha256=scan.sha256,
        compressed=scan.compressed,
        uncompressedBytes=scan.uncompressed_bytes,
        problems=file_problems or None,
    )
    if not parse:
        return report
    if scan.failure is not None:
        report.records["full"] = _record(
            False, scan.failure.reason, scan.seconds, **scan.failure.as_json(), problems=file_problems or None
        )
        if level == "drill":
            report.records["drill"] = _record(False, f"not attempted: {scan.failure.reason}", 0.0)
        return report
    problems = compare_manifest(scan, entry) + file_problems
    report.records["full"] = _record(
        not problems,
        _first(problems) if problems else None,
        scan.seconds,
        namespaces=len(scan.namespaces),
        documents=scan.documents,
        uncompressedBytes=scan.uncompressed_bytes,
        oplogEntries=scan.oplog.documents if scan.oplog else None,
        throughputMBps=scan.throughput_mb_s(),
        problems=problems or None,
    )
    if level != "drill":
        return report
    if problems:
        report.records["drill"] = _record(False, f"not attempted: {_first(problems)}", 0.0)
        return report
    t1 = time.monotonic()
    try:
        if drill_client is None:
            raise VerifyFailed("no MongoDB server to drill against", check="drill")
        try:
            client = drill_client()
        except Exception as exc:
            raise VerifyFailed(f"cannot connect to the drill server: {exc}", check="drill") from None
        with client:
            from sidecar.drill import Drill  # the drill builds on this module's scan

            drill = Drill(client, path, scan, job_id, progress=progress, cancel=cancel, identities=identities)
            details = drill.run()
        report.records["drill"] = _record(True, None, time.monotonic() - t1, **details)
    except VerifyFailed as exc:
        report.records["drill"] = _record(False, exc.reason, time.monotonic() - t1, **exc.as_json())
    return report


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
