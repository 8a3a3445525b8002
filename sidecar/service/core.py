"""The one place that runs a backup, verify, restore or prune job.

The scheduler, the HTTP API and the CLI all call ``BackupService``, so a manual backup and a scheduled
one are the same code path: same lock, same catalog updates, same listeners (metrics, logs).
Blocking work runs in the calling thread; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo

from sidecar.config import Settings, check_backup_dir
from sidecar.engine.compression import gzip_writer
from sidecar.engine.dump import DumpOptions, DumpProgress, DumpResult, NativeDump
from sidecar.engine.mongodump import find_tool, run_mongodump
from sidecar.jobs import Job, JobLock, utc_now
from sidecar.service.base import HashingWriter, JobFailed, JobListener, as_failure, connect, log
from sidecar.service.integrity import IntegrityJobs
from sidecar.store.catalog import (
    PARTIAL_SUFFIX,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    Catalog,
    Entry,
    archive_name,
    fsync_dir,
    human_size,
    iso_utc,
)
from sidecar.store.offsite import Offsite
from sidecar.store.retention import Removal

MAX_JOB_RECORDS = 100


class BackupService(IntegrityJobs):
    def __init__(self, settings: Settings, listeners: list[JobListener] | None = None):
        self.settings = settings
        self.catalog = Catalog(settings.backup_dir)
        self.offsite = Offsite(settings, self.catalog)  # S3 copies, age encryption, tiered retention
        self.lock = JobLock(settings.backup_dir)
        self.listeners: list[JobListener] = list(listeners or [])
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.current: Job | None = None
        self.cancel = threading.Event()

    # -- job bookkeeping -------------------------------------------------------------------------

    def new_job(self, kind: str, trigger: str = "manual", **params: Any) -> Job:
        job = Job(kind=kind, trigger=trigger, params=params)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_JOB_RECORDS:
            self.jobs.popitem(last=False)
        return job

    @contextlib.contextmanager
    def _running(self, job: Job) -> Iterator[Job]:
        """Take the lock, mark the job running, tell listeners; record the outcome whatever happens."""
        job.started_at = iso_utc(utc_now())
        try:
            check_backup_dir(self.settings)
        except ValueError as exc:
            job.state, job.error, job.stage = "failed", str(exc), "write"
            raise JobFailed(str(exc), "write") from None
        self.lock.acquire(job)
        job.state = "running"
        self.current = job
        log.info("%s job %s started (%s)", job.kind, job.id, job.trigger, extra={"job_id": job.id})
        self._notify("job_started", job)
        try:
            yield job
            job.state = "succeeded"
        except JobFailed as exc:
            job.state, job.error, job.stage = "failed", str(exc), exc.stage
            raise
        except Exception as exc:
            job.state, job.error, job.stage = "failed", f"unexpected error: {exc}", job.stage or "dump"
            raise JobFailed(job.error, job.stage) from exc
        finally:
            job.finished_at = iso_utc(utc_now())
            self.current = None
            self.lock.release()
            level = logging.INFO if job.state == "succeeded" else logging.ERROR
            log.log(
                level,
                "%s job %s %s%s",
                job.kind,
                job.id,
                job.state,
                f": {job.error}" if job.error else "",
                extra={"job_id": job.id},
            )
            self._notify("job_finished", job)

    def _notify(self, event: str, job: Job) -> None:
        for listener in self.listeners:
            try:
                getattr(listener, event)(job)
            except Exception:  # a broken listener must not fail the backup
                log.exception("listener %r failed on %s", listener, event)

    # -- backup ----------------------------------------------------------------------------------

    def run_backup(self, job: Job | None = None, *, prune: bool = True) -> Entry:
        job = job or self.new_job("backup")
        with self._running(job):
            self.recover()
            entry = self._backup(job)
            job.result = {key: entry[key] for key in ("fileName", "sizeBytes", "durationSeconds", "sha256")}
            if self.offsite.enabled:
                job.stage = "upload"
            upload_error = self.offsite.copy(job.result, entry)  # fills job.result["uploads"]
            if prune:
                removed = self._prune(dry_run=False)
                job.result["pruned"] = [r.file_name for r in removed]
                job.result["removed"] = [r.__dict__ for r in removed]
            if upload_error:
                raise JobFailed(upload_error, "upload")
            return self.catalog.get(entry["fileName"]) or entry

    def _backup(self, job: Job) -> Entry:
        settings = self.settings
        started, t0 = utc_now(), time.monotonic()
        name = self._free_name(started)
        job.result = {"fileName": name}
        entry: Entry = {
            "fileName": name,
            "fileSize": "0B",
            "createdAt": iso_utc(started),
            "status": STATUS_RUNNING,
            "trigger": job.trigger,
            "engine": settings.engine,
            "jobId": job.id,
            "locations": ["local"],
        }
        self.catalog.add(entry)
        final = settings.backup_dir / name
        partial = settings.backup_dir / f".{name}{PARTIAL_SUFFIX}"
        try:
            job.stage = "connect"
            client = connect(settings)
            with client:
                job.stage = "dump"
                result, size, digest = self._dump(client, partial, job)
            os.replace(partial, final)
            fsync_dir(settings.backup_dir)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            self.offsite.discard(name)
            failure = as_failure(exc, job.stage or "dump", name)
            self.catalog.patch(
                name,
                status=STATUS_FAILED,
                error=str(failure),
                failedStage=failure.stage,
                durationSeconds=round(time.monotonic() - t0, 3),
                finishedAt=iso_utc(utc_now()),
            )
            if isinstance(exc, Exception):
                raise failure from None
            raise
        duration = round(time.monotonic() - t0, 3)
        return self.catalog.patch(
            name,
            status=STATUS_COMPLETED,
            fileSize=human_size(size),
            sizeBytes=size,
            sha256=digest,
            durationSeconds=duration,
            finishedAt=iso_utc(utc_now()),
            serverVersion=result.server_version,
            uncompressedBytes=result.uncompressed_bytes,
            namespaces={
                ns: {"documents": s.documents, "bytes": s.bytes, "crc": s.crc, "type": s.type}
                for ns, s in result.namespaces.items()
            },
            oplog=result.oplog.as_json() if result.oplog else None,
        )

    def _free_name(self, moment: Any) -> str:
        """Names have one-second resolution: wait out a collision rather than overwrite."""
        while True:
            name = archive_name(self.settings.file_prefix, moment) + self.offsite.suffix  # .age: encrypted
            if not (self.settings.backup_dir / name).exists() and self.catalog.get(name) is None:
                return name
            time.sleep(0.2)
            moment = utc_now()

    def dump_options(self) -> DumpOptions:
        s = self.settings
        return DumpOptions(
            database=s.database,
            ns_include=s.ns_include,
            ns_exclude=s.ns_exclude,
            parallel_collections=s.parallel_collections,
            oplog=s.oplog,
        )

    def _dump(self, client: pymongo.MongoClient, partial: Path, job: Job) -> tuple[DumpResult, int, str]:
        settings = self.settings
        if settings.engine == "mongodump":
            return self._dump_with_tool(client, partial, job)

        def progress(state: DumpProgress) -> None:
            job.progress.update(
                namespacesTotal=state.namespaces_total,
                namespacesDone=state.namespaces_done,
                documents=state.documents,
                bytes=state.bytes,
            )

        with open(partial, "xb") as raw:
            hashing = HashingWriter(raw)
            with self.offsite.sink(hashing, partial.name[1:].removesuffix(PARTIAL_SUFFIX)) as sink:
                gz = gzip_writer(sink, settings.compression, settings.compression_level)
                try:
                    result = NativeDump(client, self.dump_options(), progress, self.cancel).run(gz)
                    job.stage = "write"
                finally:
                    gz.close()
            raw.flush()
            os.fsync(raw.fileno())
        return result, hashing.size, hashing.sha256.hexdigest()

    def _dump_with_tool(
        self, client: pymongo.MongoClient, partial: Path, job: Job
    ) -> tuple[DumpResult, int, str]:
        tool = find_tool(self.settings.mongodump_path)
        if tool is None:
            raise JobFailed(
                f"SIDECAR_ENGINE=mongodump but {self.settings.mongodump_path!r} is not on PATH", "dump"
            )
        oplog = NativeDump(client, self.dump_options()).use_oplog()
        target = self.offsite.tool_target(partial)  # a plaintext temporary when encrypting
        result = run_mongodump(
            tool, self.settings.mongodb_uri, target, self.dump_options(), oplog=oplog, cancel=self.cancel
        )
        job.stage = "write"
        if target != partial:
            self.offsite.encrypt_file(target, partial)
        digest, size = hashlib.sha256(), 0
        with open(partial, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
                size += len(block)
            os.fsync(handle.fileno())
        return result, size, digest.hexdigest()

    def recover(self) -> list[str]:
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

        self.catalog.update(mark)
        for leftover in self.settings.backup_dir.glob(f".*{PARTIAL_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            fixed.append(leftover.name)
        fixed += self.offsite.recover()  # unfinished multipart uploads in the bucket
        if fixed:
            log.warning("recovered after an interrupted job: %s", ", ".join(fixed))
        return fixed

    # -- retention -------------------------------------------------------------------------------

    def run_prune(self, job: Job | None = None, *, dry_run: bool = False) -> list[Removal]:
        job = job or self.new_job("prune", dry_run=dry_run)
        with self._running(job):
            removed = self._prune(dry_run=dry_run)
            job.result = {"dryRun": dry_run, "removed": [r.__dict__ for r in removed]}
            return removed

    def plan_prune(self) -> list[Removal]:
        """Tiered retention on every destination (store/retention.py); one Removal per copy."""
        return self.offsite.plan(self.catalog.load(), utc_now())

    def _prune(self, *, dry_run: bool) -> list[Removal]:
        removals = self.plan_prune()
        if dry_run or not removals:
            return removals
        return self.offsite.apply(removals)  # deletes the copies, then updates the catalog

    # -- queries ---------------------------------------------------------------------------------

    def list_backups(self) -> list[Entry]:
        return self.catalog.load()
