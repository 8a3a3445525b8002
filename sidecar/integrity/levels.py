"""The levels of an integrity test, each including the one before:

- quick: the file exists, its size and sha256 equal the catalog's, the gzip stream is complete;
- full: every document framed and decoded, every namespace's CRC-64 checked, per-namespace document
  counts and bytes equal to the catalog's manifest (a file not in the catalog: on its own merits);
- drill: the archive restored into scratch databases and compared with the scan (``drill.py``).

One streaming pass does quick and full together; a drill reads the pinned source a second time, so
it restores exactly the bytes the scan checked. Every failure names what broke, and where: the byte
offset in the uncompressed archive stream and the namespace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar.integrity.checks import compare_file, compare_manifest, record
from sidecar.integrity.drill import Drill
from sidecar.integrity.failure import ARCHIVE_LEVELS, LEVELS, SERVER_CHECK, VerifyFailed, first_problem
from sidecar.integrity.proof_server import ProofServer, run_on
from sidecar.integrity.scan import ArchiveScan, as_source, read_failed, scan_archive
from sidecar.progress import Progress
from sidecar.store.source import ArchiveReadError, ArchiveSource

# the drill's server, given the archive's raw size (integrity/proof_server.py)
DrillServer = Callable[[int], AbstractContextManager[ProofServer]]


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
            found = self.records.get(level)
            if found and not found["ok"]:
                return found["reason"]
        return None


def verify_archive(
    archive: ArchiveSource | Path,
    entry: Mapping[str, Any] | None,
    level: str,
    *,
    job_id: str = "adhoc",
    drill_server: DrillServer | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> VerifyReport:
    """Run ``level`` (and the levels under it) on ``archive``; ``entry`` is its catalog entry or None."""
    if level not in ARCHIVE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ARCHIVE_LEVELS)}, got {level!r}")
    source = as_source(archive)
    report = VerifyReport(level)
    emit = progress or Progress()
    emit.begin("verify")
    try:
        if level != "drill":
            return _scan_levels(source, entry, report, emit, cancel)
        with source.pinned():  # the drill restores the bytes the scan checked
            if _scan_levels(source, entry, report, emit, cancel).ok:
                report.records["drill"] = _drill(source, report.scan, job_id, drill_server, emit, cancel)
            return report
    except ArchiveReadError as exc:  # the pin found no copy to read
        return _unreadable(report, source, read_failed(exc))


def _scan_levels(
    source: ArchiveSource,
    entry: Mapping[str, Any] | None,
    report: VerifyReport,
    emit: Progress,
    cancel: threading.Event | None,
) -> VerifyReport:
    level = report.level
    parse = level != "quick"
    try:
        scan = scan_archive(
            source,
            parse=parse,
            hash_contents=level == "drill",
            manifest=(entry or {}).get("namespaces"),
            progress=emit,
            cancel=cancel,
        )
    except VerifyFailed as exc:  # the file cannot be read through: no level can pass
        return _unreadable(report, source, exc)
    report.scan = scan
    file_problems = compare_file(scan, entry)
    report.records["quick"] = record(
        not file_problems,
        first_problem(file_problems) if file_problems else None,
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
        report.records["full"] = record(
            False, scan.failure.reason, scan.seconds, **scan.failure.as_json(), problems=file_problems or None
        )
        if level == "drill":
            report.records["drill"] = record(False, f"not attempted: {scan.failure.reason}", 0.0)
        return report
    problems = compare_manifest(scan, entry) + file_problems
    report.records["full"] = record(
        not problems,
        first_problem(problems) if problems else None,
        scan.seconds,
        namespaces=len(scan.namespaces),
        documents=scan.documents,
        uncompressedBytes=scan.uncompressed_bytes,
        oplogEntries=scan.oplog.documents if scan.oplog else None,
        throughputMBps=scan.throughput_mb_s(),
        problems=problems or None,
    )
    if level == "drill" and problems:
        report.records["drill"] = record(False, f"not attempted: {first_problem(problems)}", 0.0)
    return report


def _unreadable(report: VerifyReport, source: ArchiveSource, exc: VerifyFailed) -> VerifyReport:
    size = source.path.stat().st_size if source.path.is_file() else None
    failed = record(False, exc.reason, 0.0, sizeBytes=size, **exc.as_json())
    for name in LEVELS[: LEVELS.index(report.level) + 1]:
        report.records[name] = dict(failed)
    if report.level == "drill":
        report.records["drill"]["reason"] = f"not attempted: {exc.reason}"
    return report


def _drill(
    source: ArchiveSource,
    scan: ArchiveScan | None,
    job_id: str,
    drill_server: DrillServer | None,
    emit: Progress,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    assert scan is not None
    t1 = time.monotonic()
    try:
        if drill_server is None:
            raise VerifyFailed("no MongoDB server to drill against", check=SERVER_CHECK)
        with drill_server(scan.uncompressed_bytes) as server:
            drill = Drill(server.client, source, scan, job_id, progress=emit, cancel=cancel)
            details = run_on(server, drill)
        return record(True, None, time.monotonic() - t1, **details)
    except VerifyFailed as exc:
        return record(False, exc.reason, time.monotonic() - t1, **exc.as_json())
