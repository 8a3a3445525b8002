"""The alternative dump engine: the stock ``mongodump --archive --gzip`` when it is installed.

mongodump writes to its stdout; the bytes go straight into the caller's stream (the archive sink:
hashed, encrypted, written, uploaded in one pass, never a plaintext file) and, on the way, through
our archive reader, so the catalog records the same facts as for the native engine. A cancel kills
mongodump at once. The URI stays off the command line (``tools.py``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from typing import BinaryIO

import bson

from sidecar.archive import ArchiveReader, DocumentChunk, NamespaceEnd
from sidecar.engine.compression import gzip_reader
from sidecar.engine.dump import DumpCancelled, DumpError, DumpOptions, DumpResult, NamespaceStats, OplogRange
from sidecar.engine.tools import find_tool, tool_process

__all__ = ["find_tool", "mongodump_arguments", "run_mongodump"]


def mongodump_arguments(options: DumpOptions, oplog: bool) -> list[str]:
    """After ``--config``: the archive to stdout, gzip, and the dump's scope."""
    args = ["--archive", "--gzip", f"--numParallelCollections={options.parallel_collections}"]
    args += _scope(options)
    if oplog:
        args.append("--oplog")
    return args


def _scope(options: DumpOptions) -> list[str]:
    """mongodump selects one database (--db), or one collection of it (--collection), and excludes
    collections by name or prefix; include patterns beyond ``db.*`` and ``db.coll`` need the native engine."""
    db, collection = options.database, ""
    if len(options.ns_include) > 1:
        raise DumpError(_unsupported("SIDECAR_NS_INCLUDE with more than one pattern"))
    for pattern in options.ns_include:
        db, _, collection = pattern.partition(".")
        collection = "" if collection == "*" else collection
        if (not collection and pattern != f"{db}.*") or "*" in db + collection or "?" in pattern:
            raise DumpError(_unsupported(f"SIDECAR_NS_INCLUDE={pattern}"))
    args = [f"--db={db}"] if db else []
    args += [f"--collection={collection}"] if collection else []
    for pattern in options.ns_exclude:
        excluded_db, _, name = pattern.partition(".")
        if excluded_db != db or not name or "*" in name[:-1] or "?" in name:
            raise DumpError(_unsupported(f"SIDECAR_NS_EXCLUDE={pattern}"))
        args.append(
            f"--excludeCollectionsWithPrefix={name[:-1]}"
            if name.endswith("*")
            else f"--excludeCollection={name}"
        )
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
    cancel = cancel or threading.Event()
    summary = _Summary()
    try:
        args = mongodump_arguments(options, oplog)
        with tool_process(tool, uri, args, stdout=subprocess.PIPE, cancel=cancel, timeout=timeout) as run:
            assert run.proc.stdout is not None
            while block := run.proc.stdout.read1(1 << 20):
                into.write(block)
                summary.feed(block)
            code = run.wait()
    finally:
        summary.close()
    if run.killed_for == "cancel":
        raise DumpCancelled()
    if run.killed_for == "timeout":
        raise DumpError(f"mongodump did not finish within {timeout}s")
    if code != 0:
        raise DumpError(f"mongodump failed: {run.last_line()}")
    return summary.result()


class _Summary:
    """Our reader over mongodump's output, in a thread fed through a pipe as the bytes pass."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        self._result: DumpResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(read,), name="mongodump-summary", daemon=True)
        self._thread.start()

    def _run(self, read: int) -> None:
        try:
            with open(read, "rb") as raw, gzip_reader(raw) as stream:
                self._result = summarize(stream)
                while stream.read(1 << 20):  # what follows the archive must still be read through
                    pass
        except BaseException as exc:
            self._error = exc

    def feed(self, block: bytes) -> None:
        if self._error is None:
            with contextlib.suppress(BrokenPipeError):  # the reader stopped: result() reports why
                _write_all(self._write, block)

    def close(self) -> None:
        if self._write >= 0:
            os.close(self._write)
            self._write = -1
        self._thread.join()

    def result(self) -> DumpResult:
        if self._error is not None or self._result is None:
            raise DumpError(f"mongodump's output is not a readable archive: {self._error}")
        return self._result


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
