"""The backup job: dump to a new archive, copy it off-site, apply retention, then the integrity test
that ``SIDECAR_VERIFY_AFTER_BACKUP`` asks for. The same for the scheduler, the API, ``sidecar backup``
and the CronJob's ``sidecar backup --once``.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pymongo

from sidecar import clock
from sidecar.engine.dump import DumpOptions, DumpResult, NativeDump, OplogFromArchive
from sidecar.engine.mongodump import run_mongodump
from sidecar.jobs import Job, JobBusy
from sidecar.pitr.capture.cut import ArchiveCut
from sidecar.service.context import JobContext, JobFailed, as_failure, connect, log
from sidecar.service.prune import prune
from sidecar.service.verify import run_verify
from sidecar.store.catalog import (
    PARTIAL_SUFFIX,
    SAFETY_TRIGGER,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    Entry,
    archive_name,
)
from sidecar.store.sink import ArchiveSink
from sidecar.text import human_size, iso_utc


def run_backup(ctx: JobContext, job: Job | None = None, *, prune_after: bool = True) -> Entry:
    """A backup job, then (as its own verify job) the integrity test the settings ask for.

    A failed integrity test is logged and recorded in the catalog and the metrics; it does not turn
    the backup into a failed one (the archive is there; the test's verdict says whether it is good).
    """
    job = job or ctx.new_job("backup")
    with ctx.running(job, precheck=False):
        recover(ctx)
        entry, upload_error = backup_and_copy(ctx, job, dump_options(ctx))
        if prune_after:
            removed = prune(ctx, dry_run=False, result=job.result)
            job.result["pruned"] = [r.file_name for r in removed]
            job.result["removed"] = [r.__dict__ for r in removed]
        if upload_error:
            raise JobFailed(upload_error, "upload")
        entry = ctx.catalog.get(entry["fileName"]) or entry
    if verify_after(ctx, job, entry):
        entry = ctx.catalog.get(entry["fileName"]) or entry  # with the test's verdict
    return entry


def backup_and_copy(ctx: JobContext, job: Job, options: DumpOptions) -> tuple[Entry, str | None]:
    """The archive taken and copied off-site; returns its entry and the upload's error, if any."""
    entry = take_backup(ctx, job, options)
    result = {key: entry[key] for key in ("fileName", "sizeBytes", "durationSeconds", "sha256")}
    job.result = result
    if ctx.offsite.enabled:
        job.stage = "upload"
        job.progress.begin("upload")
    upload_error = ctx.offsite.copy(result, entry)  # fills result["uploads"]
    return entry, upload_error


def verify_after(ctx: JobContext, job: Job, entry: Entry) -> bool:
    """The integrity test ``SIDECAR_VERIFY_AFTER_BACKUP`` asks for; False when none ran."""
    level = ctx.settings.verify_after_backup
    if level == "off" or ctx.draining or ctx.cancel.is_set():
        return False
    verify_job = ctx.new_job("verify", job.trigger, level=level, fileName=entry["fileName"])
    verify_job.progress = job.progress  # one line on the terminal: the backup's, now in its verify phase
    job.result = {**(job.result or {}), "verifyJobId": verify_job.id}
    try:
        run_verify(ctx, verify_job, file_name=entry["fileName"], level=level)
    except (JobFailed, JobBusy) as exc:
        log.error(
            "integrity test of %s after the backup did not pass: %s",
            entry["fileName"],
            exc,
            extra={"job_id": verify_job.id},
        )
    return True


def take_backup(ctx: JobContext, job: Job, options: DumpOptions) -> Entry:
    """Dump into a new archive under the caller's ``running`` block: catalog entry first (running),
    then the archive sink (partial file, fsync, rename), and only then ``completed``. Any failure
    leaves a failed entry and no file, the older archives untouched."""
    settings = ctx.settings
    started, t0 = clock.now(), time.monotonic()
    name = free_name(ctx, started)
    job.result = {"fileName": name}
    # a safety backup names exact namespaces, which only the native engine can select
    engine = "native" if job.trigger == SAFETY_TRIGGER else settings.engine
    ctx.catalog.add(
        {
            "fileName": name,
            "fileSize": "0B",
            "createdAt": iso_utc(started),
            "status": STATUS_RUNNING,
            "trigger": job.trigger,
            "engine": engine,
            "jobId": job.id,
            "locations": ["local"],
        }
    )
    try:
        job.stage = "write"
        ctx.check_backup_dir()
        job.stage = "connect"
        client = connect(settings)
        with client, ctx.offsite.sink(settings.backup_dir / name) as sink:
            job.stage = "dump"
            result = dump(ctx, client, options, sink, job, engine)
            job.stage = "write"
            stored = sink.commit()  # fsync, rename: only now does the archive have its name
    except BaseException as exc:
        ctx.offsite.discard(name)
        failure = as_failure(exc, job.stage or "dump", name)
        ctx.catalog.patch(
            name,
            status=STATUS_FAILED,
            error=str(failure),
            failedStage=failure.stage,
            durationSeconds=round(time.monotonic() - t0, 3),
            finishedAt=iso_utc(clock.now()),
        )
        if isinstance(exc, Exception):
            raise failure from None
        raise
    return ctx.catalog.patch(
        name,
        status=STATUS_COMPLETED,
        fileSize=human_size(stored.size),
        sizeBytes=stored.size,
        sha256=stored.hexdigest(),
        durationSeconds=round(time.monotonic() - t0, 3),
        finishedAt=iso_utc(clock.now()),
        serverVersion=result.server_version,
        uncompressedBytes=result.uncompressed_bytes,
        namespaces={
            ns: {"documents": s.documents, "bytes": s.bytes, "crc": s.crc, "type": s.type}
            for ns, s in result.namespaces.items()
        },
        oplog=result.oplog.as_json() if result.oplog else None,
    )


def free_name(ctx: JobContext, moment: Any) -> str:
    """Names have one-second resolution: wait out a collision rather than overwrite."""
    while True:
        name = archive_name(ctx.settings.file_prefix, moment) + ctx.offsite.suffix  # .age: encrypted
        if not (ctx.settings.backup_dir / name).exists() and ctx.catalog.get(name) is None:
            return name
        time.sleep(0.2)
        moment = clock.now()


def dump_options(ctx: JobContext) -> DumpOptions:
    s = ctx.settings
    return DumpOptions(
        database=s.database,
        ns_include=s.ns_include,
        ns_exclude=s.ns_exclude,
        parallel_collections=s.parallel_collections,
        oplog=s.oplog,
    )


def dump(
    ctx: JobContext,
    client: pymongo.MongoClient,
    options: DumpOptions,
    sink: ArchiveSink,
    job: Job,
    engine: str,
) -> DumpResult:
    """The engine's dump into the sink: the native one writes the archive, mongodump its gzip bytes."""
    if engine != "mongodump":
        dumper = NativeDump(client, options, job.progress, ctx.cancel, from_archive=archive_cut(ctx, client))
        return dumper.run(sink.archive)
    tool = shutil.which(ctx.settings.mongodump_path)
    if tool is None:
        raise JobFailed(
            f"SIDECAR_ENGINE=mongodump but {ctx.settings.mongodump_path!r} is not on PATH", "dump"
        )
    oplog = NativeDump(client, options).use_oplog()
    job.progress.begin("dump")
    return run_mongodump(
        tool, ctx.settings.mongodb_uri, sink.gzipped, options, oplog=oplog, cancel=ctx.cancel
    )


def archive_cut(ctx: JobContext, client: pymongo.MongoClient) -> OplogFromArchive | None:
    """The oplog cut from the archive when SIDECAR_PITR allows an archiver (pitr/capture/cut.py decides at the
    cut whether one is at work)."""
    return None if ctx.settings.pitr == "off" else ArchiveCut(ctx.settings, client, ctx.cancel).take


def recover(ctx: JobContext) -> list[str]:
    """Under the job lock: entries left 'running' by a killed process become failed; partials go."""
    fixed: list[str] = []

    def mark(entries: list[Entry]) -> None:
        for entry in entries:
            if entry.get("status") == STATUS_RUNNING:
                entry.update(
                    status=STATUS_FAILED,
                    failedStage="dump",
                    error="interrupted: the process stopped before the backup finished",
                )
                fixed.append(entry["fileName"])

    ctx.catalog.update(mark)
    for leftover in ctx.settings.backup_dir.glob(f".*{PARTIAL_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        fixed.append(leftover.name)
    fixed += ctx.offsite.recover()  # unfinished multipart uploads in the bucket
    if fixed:
        log.warning("recovered after an interrupted job: %s", ", ".join(fixed))
    return fixed
