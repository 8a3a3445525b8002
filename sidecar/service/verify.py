"""The verify job: an integrity test of one archive at a level (quick, full, drill), its verdict
recorded in the archive's catalog entry; and which archive a verify or restore means."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sidecar.integrity.failure import ARCHIVE_LEVELS, SERVER_CHECK
from sidecar.integrity.levels import VerifyReport, verify_archive
from sidecar.integrity.proof_server import proof_server
from sidecar.jobs import Job
from sidecar.service.context import JobContext, JobFailed
from sidecar.store.catalog import STATUS_COMPLETED, Entry, find_entry, newest_usable
from sidecar.store.source import ArchiveSource, source_for


def run_verify(
    ctx: JobContext,
    job: Job | None = None,
    *,
    file_name: str | None = None,
    latest: bool = False,
    level: str = "full",
) -> dict[str, Any]:
    """Integrity test of one archive at ``level``; the result goes into its catalog entry."""
    if level not in ARCHIVE_LEVELS:
        raise ValueError(f"level must be one of {', '.join(ARCHIVE_LEVELS)}, got {level!r}")
    job = job or ctx.new_job("verify", fileName=file_name or "--latest", level=level)
    with ctx.running(job):
        job.stage = "verify"
        path, entry = resolve_archive(ctx, file_name, latest=latest, stage="verify")
        name = entry["fileName"] if entry else str(path)
        result = {"fileName": name, "level": level, "inCatalog": entry is not None, "location": path.location}
        job.result = result
        report = verify_archive(
            path,
            entry,
            level,
            job_id=job.id,
            drill_server=lambda raw_bytes: proof_server(ctx.settings, "restore drill", raw_bytes, job.id),
            progress=job.progress,
            cancel=ctx.cancel,
        )
        job.result = {**result, "ok": report.ok, "reason": report.reason, "verification": report.records}
        if entry is not None:
            record_verification(ctx, entry["fileName"], report)
        if not report.ok:
            raise JobFailed(f"{level} verification of {name} failed: {report.reason}", "verify")
        return job.result


def run_drill(ctx: JobContext, job: Job) -> dict[str, Any]:
    """The scheduled restore drill: of the archive named in the job, else of the newest backup."""
    file_name = job.params.get("fileName") or (newest_usable(ctx.catalog.load()) or {}).get("fileName")
    if file_name is None:
        raise JobFailed("no completed backup to drill", "verify")
    job.params["fileName"] = file_name
    return run_verify(ctx, job, file_name=file_name, level="drill")


def record_verification(ctx: JobContext, file_name: str, report: VerifyReport) -> None:
    """Every level's record goes into the entry; the archive's verdict (``lastVerification``) only
    when the test said something about the archive, not when the drill's server failed."""
    # Verify jobs hold the job lock, so nothing else changes this entry's verification meanwhile.
    current = ctx.catalog.get(file_name) or {}
    last = report.records[report.level]
    fields: dict[str, Any] = {"verification": {**(current.get("verification") or {}), **report.records}}
    if last.get("failedCheck") != SERVER_CHECK:
        fields["lastVerification"] = {"level": report.level, "ok": last["ok"], "at": last["at"]}
    ctx.catalog.patch(file_name, **fields)


def resolve_archive(
    ctx: JobContext, file_name: str | None, *, latest: bool = False, stage: str = "verify"
) -> tuple[ArchiveSource, Entry | None]:
    """FILE is a catalog fileName or a path; without one (or with --latest), the newest usable
    backup (catalog.newest_usable). A path in the backup directory keeps its entry. The source is
    the local file, or the bucket's copy when the file is gone."""
    entries = ctx.catalog.load()
    backup_dir = ctx.settings.backup_dir
    if latest or not file_name:
        newest = newest_usable(entries)
        if newest is None:
            raise JobFailed(f"no completed backup in the catalog of {backup_dir} is usable", stage)
        return source_for(ctx.settings, backup_dir / newest["fileName"], newest), newest
    if "/" not in file_name and os.sep not in file_name:
        entry = find_entry(entries, file_name)
        if entry is not None:
            if entry.get("status") != STATUS_COMPLETED:
                raise JobFailed(
                    f"{file_name} is not a completed backup (status {entry.get('status')})", stage
                )
            return source_for(ctx.settings, backup_dir / file_name, entry), entry
        for candidate in (backup_dir / file_name, Path(file_name)):
            if candidate.is_file():
                return source_for(ctx.settings, candidate), None
        raise JobFailed(f"{file_name} is neither in the catalog of {backup_dir} nor an existing file", stage)
    path = Path(file_name).expanduser()
    if not path.is_file():
        raise JobFailed(f"no such archive file: {file_name}", stage)
    entry = None
    if path.resolve().parent == backup_dir.resolve():
        found = find_entry(entries, path.name)
        entry = found if found is not None and found.get("status") == STATUS_COMPLETED else None
    return source_for(ctx.settings, path, entry), entry
