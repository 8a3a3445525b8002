"""The alternative dump engine: the stock ``mongodump --archive --gzip`` when it is installed.

mongodump writes to its stdout; the bytes go straight into the caller's stream (the archive sink:
hashed, encrypted, written, uploaded in one pass, never a plaintext file) and, on the way, through
our archive reader, so the catalog records the same facts as for the native engine. A cancel kills
mongodump at once. The URI stays off the command line (``tools.py``).
"""

from __future__ import annotations

import io
import subprocess
import threading
from typing import Any, BinaryIO

import bson

from sidecar.archive import ArchiveReader, DocumentChunk, NamespaceEnd
from sidecar.codec.gzip_stream import gzip_reader
from sidecar.engine.dump import DumpCancelled, DumpError, DumpOptions, DumpResult, NamespaceStats, OplogRange
from sidecar.engine.tools import tool_process


def mongodump_arguments(options: DumpOptions, oplog: bool) -> list[str]:
    """After ``--config``: the archive to stdout, gzip, and the dump's scope."""
    args = ["--archive", "--gzip", f"--numParallelCollections={options.parallel_collections}"]
    args += _scope(options)
    if oplog:
        args.append("--oplog")
    return args


def _scope(options: DumpOptions) -> list[str]:
    """mongodump dumps everything, one database or one collection of it, minus collections of that
    database by name or prefix: one ``db.*`` or ``db.coll`` include, ``db.coll`` or ``db.prefix*``
    excludes. Other patterns need the native engine."""
    db, coll = options.database, ""
    if len(options.ns_include) > 1:
        raise DumpError(_unsupported("SIDECAR_NS_INCLUDE with more than one pattern"))
    for pattern in options.ns_include:
        db, _, coll = pattern.partition(".")
        coll = "" if coll == "*" else coll
        if (not coll and not pattern.endswith(".*")) or any(c in db + coll for c in "*?["):
            raise DumpError(_unsupported(f"SIDECAR_NS_INCLUDE={pattern}"))
    args = [f"--db={db}"] * bool(db) + [f"--collection={coll}"] * bool(coll)
    for pattern in options.ns_exclude:
        name = pattern.removeprefix(f"{db}.")
        if not db or name == pattern or any(c in name.rstrip("*") for c in "*?["):
            raise DumpError(_unsupported(f"SIDECAR_NS_EXCLUDE={pattern}"))
        flag = "--excludeCollectionsWithPrefix" if name.endswith("*") else "--excludeCollection"
        args.append(f"{flag}={name.rstrip('*')}")
    return args


def _unsupported(what: str) -> str:
    return (
        f"mongodump cannot express {what} (it dumps everything, one database, or one collection, "
        f"minus excluded collections of that database); use SIDECAR_ENGINE=native"
    )


def run_mongodump(
    tool: str,
    uri: str,
    into: BinaryIO,
    options: DumpOptions,
    *,
    oplog: bool,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> DumpResult:
    """Run mongodump, writing its gzip archive into ``into``; what it dumped, read on the way."""
    args = mongodump_arguments(options, oplog)
    with tool_process(tool, uri, args, stdout=subprocess.PIPE, cancel=cancel, timeout=timeout) as run:
        try:
            tee = _Tee(run.proc.stdout, into)  # type: ignore[arg-type]
            with gzip_reader(tee) as stream:  # type: ignore[arg-type]
                result = summarize(stream)
                while stream.read(1 << 20):  # the gzip trailer's checks run at its end
                    pass
            while tee.read(1 << 20):  # whatever follows, as mongodump wrote it
                pass
        except Exception as exc:
            result, error = None, exc
        code = run.wait()
    if run.killed_for == "cancel":
        raise DumpCancelled()
    if run.killed_for == "timeout":
        raise DumpError(f"mongodump did not finish within {timeout}s")
    if code != 0:
        raise DumpError(f"mongodump failed: {run.last_line()}")
    if result is None:
        raise DumpError(f"mongodump's output is not a readable archive: {error}")
    return result


class _Tee(io.RawIOBase):
    """mongodump's stdout as our reader reads it; every byte read also goes into the archive sink."""

    def __init__(self, raw: BinaryIO, into: BinaryIO):
        self.raw, self.into = raw, into

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read1(len(memoryview(buffer)))  # type: ignore[attr-defined]
        self.into.write(data)
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def summarize(stream: BinaryIO) -> DumpResult:
    """Per-namespace counts, bytes and CRCs, and the oplog's range, of an uncompressed archive."""
    reader = ArchiveReader(stream)
    prelude = reader.read_prelude()
    result = DumpResult(prelude.header.server_version)
    types = {str(c.namespace): c.type for c in prelude.collections}
    first = last = None
    entries = 0
    for event in reader.events():
        if event.namespace.is_oplog:
            if isinstance(event, DocumentChunk):
                documents = list(event.documents())
                first = first or bytes(documents[0])
                last, entries = bytes(documents[-1]), entries + event.count
            continue
        if isinstance(event, NamespaceEnd):
            ns = str(event.namespace)
            result.namespaces[ns] = NamespaceStats(event.documents, event.bytes, event.crc, types.get(ns, ""))
    if first is not None and last is not None:
        result.oplog = OplogRange(bson.decode(first)["ts"], bson.decode(last)["ts"], entries)
    return result
