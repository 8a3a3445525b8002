"""The one place that runs a backup, verify, restore or prune job.

The scheduler, the HTTP API and the CLI all call ``BackupService``, so a manual backup and a scheduled
one are the same code path: same lock, same catalog updates, same listeners (metrics, logs).
Blocking work runs in the calling thread; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import pymongo
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from sidecar.config import Settings, check_backup_dir, uri_hosts
from sidecar.engine.compression import gzip_writer
from sidecar.engine.dump import DumpError, DumpOptions, DumpProgress, DumpResult, NativeDump
from sidecar.engine.mongodump import find_tool, run_mongodump
from sidecar.engine.mongorestore import MongorestoreResult, run_mongorestore
from sidecar.engine.restore import (
    NamespaceOutcome,
    NativeRestore,
    OplogSummary,
    Renamer,
    RestoreError,
    RestoreOptions,
    RestorePlan,
    RestoreProgress,
    RestoreResult,
    check_counts,
    error_text,
    inspect_targets,
    plan_restore,
    server_has_apply_ops,
)
from sidecar.jobs import Job, JobLock, utc_now
from sidecar.store.backends import RemoteArchive, archive_source
from sidecar.store.catalog import (
    PARTIAL_SUFFIX,
    SAFETY_TRIGGER,
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_RUNNING,
    Catalog,
    Entry,
    archive_name,
    find_entry,
    fsync_dir,
    full_backups,
    human_size,
    iso_utc,
)
from sidecar.store.offsite import Offsite
from sidecar.store.retention import Removal
from sidecar.verify import (
    LEVELS,
    ArchiveScan,
    VerifyFailed,
    VerifyReport,
    compare_file,
    compare_manifest,
    open_archive,
    scan_archive,
    verify_archive,
)

log = logging.getLogger("sidecar.service")
MAX_JOB_RECORDS = 100


class JobFailed(RuntimeError):
    """A job failed; ``stage`` is one of connect, dump, write, verify, upload (for metrics)."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


class JobListener(Protocol):
    def job_started(self, job: Job) -> None: ...

    def job_finished(self, job: Job) -> None: ...


class _HashingWriter:
    """Counts and hashes the compressed bytes on their way to the file."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def connect(settings: Settings) -> pymongo.MongoClient:
    """A client that has answered a ping, or JobFailed(stage=connect) naming the host, never the password."""
    timeout_ms = int(settings.connect_timeout_seconds * 1000)
    try:
        client = pymongo.MongoClient(
            settings.mongodb_uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            appname="mongo-backup-sidecar",
        )
        client.admin.command("ping")
        return client
    except OperationFailure as exc:
        reason = (
            "authentication failed"
            if exc.code in (18, 13)
            else f"server refused: {exc.details.get('errmsg')}"
        )
        raise JobFailed(
            f"cannot use MongoDB at {uri_hosts(settings.mongodb_uri)}: {reason}", "connect"
        ) from None
    except (ConfigurationError, PyMongoError) as exc:
        detail = (
            f"no answer within {settings.connect_timeout_seconds:g}s"
            if "Timeout" in type(exc).__name__
            else str(exc)
        )
        raise JobFailed(
            f"cannot reach MongoDB at {uri_hosts(settings.mongodb_uri)}: {detail}", "connect"
        ) from None


class BackupService:
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
            failure = _as_failure(exc, job.stage or "dump", name)
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
            hashing = _HashingWriter(raw)
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

    # -- integrity tests and restores ------------------------------------------------------------

    def _mongorestore(
        self, tool: str, path: Path, options: RestoreOptions, plan: RestorePlan
    ) -> MongorestoreResult:
        """The stock tool on the archive, with the same options (its dry run too)."""
        return run_mongorestore(
            tool, self.settings.mongodb_uri, path, options, oplog_replay=plan.replay_oplog, cancel=self.cancel
        )

    def resolve_archive(
        self, file_name: str | None, *, latest: bool = False, stage: str = "verify"
    ) -> tuple[Path, Entry | None]:
        """FILE is a catalog fileName or a path; without one (or with --latest), the newest completed
        backup that is not a pre-restore safety copy. A path in the backup directory keeps its entry."""
        entries = self.catalog.load()
        backup_dir = self.settings.backup_dir
        if latest or not file_name:
            good = full_backups(entries)
            if not good:
                raise JobFailed(f"no completed backup in the catalog of {backup_dir}", stage)
            # the local file, or a RemoteArchive reading the bucket's copy when the file is gone
            return archive_source(self.settings, backup_dir / good[-1]["fileName"], good[-1]), good[-1]
        if "/" not in file_name and os.sep not in file_name:
            entry = find_entry(entries, file_name)
            if entry is not None:
                if entry.get("status") != STATUS_COMPLETED:
                    raise JobFailed(
                        f"{file_name} is not a completed backup (status {entry.get('status')})", stage
                    )
                return archive_source(self.settings, backup_dir / file_name, entry), entry
            for candidate in (backup_dir / file_name, Path(file_name)):
                if candidate.is_file():
                    return candidate, None
            raise JobFailed(
                f"{file_name} is neither in the catalog of {backup_dir} nor an existing file", stage
            )
        path = Path(file_name).expanduser()
        if not path.is_file():
            raise JobFailed(f"no such archive file: {file_name}", stage)
        entry = None
        if path.resolve().parent == backup_dir.resolve():
            found = find_entry(entries, path.name)
            entry = found if found is not None and found.get("status") == STATUS_COMPLETED else None
        return path, entry

    def _age_identities(self) -> list[Any]:
        from sidecar.engine.encryption import EncryptionError, load_identities

        identity_file = getattr(self.settings, "age_identity_file", "")
        if not identity_file:
            raise EncryptionError("the archive is age-encrypted: set SIDECAR_AGE_IDENTITY_FILE to decrypt it")
        return load_identities(identity_file)

    def run_verify(
        self,
        job: Job | None = None,
        *,
        file_name: str | None = None,
        latest: bool = False,
        level: str = "full",
    ) -> dict[str, Any]:
        """Integrity test of one archive at ``level``; the result goes into its catalog entry."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        job = job or self.new_job("verify", fileName=file_name or "--latest", level=level)
        with self._running(job):
            job.stage = "verify"
            path, entry = self.resolve_archive(file_name, latest=latest, stage="verify")
            name = entry["fileName"] if entry else str(path)
            job.result = {"fileName": name, "level": level, "inCatalog": entry is not None}
            job.result["location"] = getattr(path, "location", "local")  # s3: read from the bucket
            report = verify_archive(
                path,
                entry,
                level,
                job_id=job.id,
                drill_client=self._drill_client,
                progress=job.progress.update,
                cancel=self.cancel,
                identities=self._age_identities,
            )
            job.result.update(ok=report.ok, reason=report.reason, verification=report.records)
            if entry is not None:
                self._record_verification(entry["fileName"], report)
            if not report.ok:
                raise JobFailed(f"{level} verification of {name} failed: {report.reason}", "verify")
            return job.result

    def _record_verification(self, file_name: str, report: VerifyReport) -> None:
        # Verify jobs hold the job lock, so nothing else changes this entry's verification meanwhile.
        current = self.catalog.get(file_name) or {}
        verification = {**(current.get("verification") or {}), **report.records}
        last = report.records[report.level]
        self.catalog.patch(
            file_name,
            verification=verification,
            lastVerification={"level": report.level, "ok": last["ok"], "at": last["at"]},
        )

    def _drill_client(self) -> pymongo.MongoClient:
        uri = getattr(self.settings, "drill_mongodb_uri", "") or self.settings.mongodb_uri
        return connect(self.settings.replace(mongodb_uri=uri))

    def run_restore(
        self,
        job: Job | None = None,
        *,
        file_name: str | None = None,
        latest: bool = False,
        ns_include: Iterable[str] = (),
        ns_exclude: Iterable[str] = (),
        ns_from: str | Iterable[str] | None = (),
        ns_to: str | Iterable[str] | None = (),
        drop: bool = False,
        dry_run: bool = False,
        oplog_replay: bool = True,
        safety_backup: bool = True,
        engine: str | None = None,
    ) -> dict[str, Any]:
        """Restore an archive (all of it, or some namespaces, renamed or not) after verifying it fully
        and taking a safety backup of what it overwrites. Returns the restore report."""
        options = RestoreOptions(
            ns_include=tuple(ns_include),
            ns_exclude=tuple(ns_exclude),
            ns_from=_as_tuple(ns_from),
            ns_to=_as_tuple(ns_to),
            drop=drop,
            dry_run=dry_run,
            oplog_replay=oplog_replay,
        )
        engine = engine or ("mongorestore" if self.settings.engine == "mongodump" else "native")
        if engine not in ("native", "mongorestore"):
            raise ValueError(f"engine must be native or mongorestore, got {engine!r}")
        job = job or self.new_job(
            "restore",
            fileName=file_name or "--latest",
            engine=engine,
            safetyBackup=safety_backup,
            **options.as_json(),
        )
        with self._running(job):
            job.stage = "verify"
            path, entry = self.resolve_archive(file_name, latest=latest, stage="restore")
            return self._restore(job, path, entry, options, safety_backup=safety_backup, engine=engine)

    def _restore(
        self,
        job: Job,
        path: Path,
        entry: Entry | None,
        options: RestoreOptions,
        *,
        safety_backup: bool,
        engine: str,
    ) -> dict[str, Any]:
        t0 = time.monotonic()
        name = entry["fileName"] if entry else str(path)
        result: dict[str, Any] = {"fileName": name, "engine": engine, "dryRun": options.dry_run}
        job.result = result
        try:
            renamer = Renamer(options.ns_from, options.ns_to)
        except ValueError as exc:
            raise JobFailed(f"{exc}; nothing was written", "restore") from None
        # 1. The whole archive verified before the first write.
        oplog = OplogSummary()
        tool = None
        if engine == "mongorestore":
            tool = find_tool(self.settings.mongorestore_path)
            if tool is None:
                raise JobFailed(
                    f"{self.settings.mongorestore_path!r} is not on PATH (restore engine)", "restore"
                )
        scan = self._verify_for_restore(job, path, entry, oplog)
        result["verified"] = {
            "documents": scan.documents,
            "uncompressedBytes": scan.uncompressed_bytes,
            "sha256": scan.sha256,
            "seconds": round(scan.seconds, 3),
        }
        try:
            assert scan.prelude is not None
            plan = plan_restore(scan.prelude, scan.counts(), options, rename=renamer)
        except RestoreError as exc:
            raise JobFailed(f"{exc}; nothing was written", "restore") from None
        if not plan.namespaces:
            raise JobFailed(
                f"no namespace of {name} matches the given filters; nothing was written", "restore"
            )
        if plan.replay_oplog:
            result["oplog"] = oplog.as_json()
        # 2. What is there now, and so what the restore would overwrite.
        job.stage = "connect"
        client = connect(self.settings)
        with client:
            job.stage = "restore"
            inspect_targets(client, plan, drop=options.drop)
            problem = self._replay_problem(client, plan, oplog, engine)
            if problem and options.dry_run:
                result["oplog"]["problem"] = problem
            elif problem:
                raise JobFailed(f"{problem}; nothing was written", "restore")
            touched_set = set(plan.existing_targets())
            if plan.replay_oplog:
                touched_set |= self._existing(client, oplog.namespaces)
            touched = sorted(touched_set)
            result["namespaces"] = [p.as_json() for p in plan.namespaces]
            result["skipped"] = plan.skipped
            result["documents"] = plan.documents
            result["bytes"] = plan.bytes
            result["overwrites"] = touched
            if options.dry_run:
                result["safetyBackup"] = {"wouldBackUp": touched} if safety_backup and touched else None
                if tool is not None:
                    outcome = self._mongorestore(tool, path, options, plan)
                    result["mongorestore"] = outcome.as_json()
                result["durationSeconds"] = round(time.monotonic() - t0, 3)
                return result
            # 3. The safety backup of what will be overwritten (the runbook's warning).
            if touched and safety_backup:
                result["safetyBackup"] = self._safety_backup(job, touched)["fileName"]
            else:
                result["safetyBackup"] = None
                if touched:
                    result["safetyBackupSkipped"] = "opted out (--no-safety-backup)"
            # 4. The writes.
            restored = self._write_restore(job, client, path, plan, options, tool, oplog)
            for item in result["namespaces"]:
                outcome = restored.namespaces.get(item["target"])
                if outcome is not None:
                    item.update(outcome.as_json())
            result.update(
                documentsWritten=restored.documents,
                bytesWritten=restored.bytes,
                failedDocuments=restored.failed_documents,
                errorCount=restored.error_count,
                errors=restored.errors,
            )
            if restored.oplog is not None:
                result["oplog"] = {**result.get("oplog", {}), "replay": restored.oplog}
            # 5. The runbook's post-restore verification.
            check = check_counts(client, plan, restored, oplog.namespaces if plan.replay_oplog else ())
            result["postRestoreCheck"] = check
        result["durationSeconds"] = round(time.monotonic() - t0, 3)
        if restored.error_count:
            first = restored.errors[0] if restored.errors else {}
            raise JobFailed(
                f"restore of {name} finished with {restored.error_count} failed write(s) "
                f"({restored.documents} of {plan.documents} documents written; first: "
                f"{first.get('namespace')}: {first.get('message')})",
                "restore",
            )
        if not check["ok"]:
            raise JobFailed(
                f"restore of {name} finished but document counts differ from the archive: "
                f"{'; '.join(check['mismatches'][:3])}",
                "restore",
            )
        return result

    @staticmethod
    def _replay_problem(
        client: pymongo.MongoClient, plan: RestorePlan, oplog: OplogSummary, engine: str
    ) -> str | None:
        """Why the oplog of a full restore could not be replayed, known before the first write."""
        if not plan.replay_oplog or engine != "native":
            return None
        if oplog.unsupported:
            return (
                f"the archive's oplog holds entries this engine cannot replay ({oplog.unsupported[0]}); "
                f"restore with --no-oplog-replay, or with the mongorestore engine"
            )
        if oplog.to_apply:
            available, why = server_has_apply_ops(client)
            if not available:
                return (
                    f"the archive's oplog has {oplog.to_apply} operation(s) to replay but {why} "
                    f"(restore with --no-oplog-replay: the data is then as the dump read it, not "
                    f"consistent to one point in time)"
                )
        return None

    def _verify_for_restore(
        self, job: Job, path: Path, entry: Entry | None, oplog: OplogSummary
    ) -> ArchiveScan:
        def on_chunk(chunk: Any) -> None:
            if chunk.namespace.is_oplog:
                oplog.feed(chunk)

        def progress(state: Any) -> None:
            job.progress.update(
                phase="verify",
                bytes=state.bytes,
                documents=state.documents,
                namespacesDone=state.namespaces_done,
                namespacesTotal=state.namespaces_total,
            )

        name = entry["fileName"] if entry else str(path)
        try:
            scan = scan_archive(
                path,
                manifest=(entry or {}).get("namespaces"),
                on_chunk=on_chunk,
                progress=progress,
                cancel=self.cancel,
                identities=self._age_identities,
            )
        except VerifyFailed as exc:
            raise JobFailed(
                f"refusing to restore {name}: {exc.reason}; nothing was written", "verify"
            ) from None
        problems = (
            [scan.failure.reason]
            if scan.failure
            else compare_manifest(scan, entry) + compare_file(scan, entry)
        )
        if problems:
            raise JobFailed(f"refusing to restore {name}: {problems[0]}; nothing was written", "verify")
        return scan

    @staticmethod
    def _existing(client: pymongo.MongoClient, namespaces: Iterable[str]) -> set[str]:
        found: set[str] = set()
        by_db: dict[str, set[str]] = {}
        for ns in namespaces:
            db, _, coll = ns.partition(".")
            by_db.setdefault(db, set()).add(coll)
        for db, colls in by_db.items():
            names = set(client[db].list_collection_names())
            found |= {f"{db}.{c}" for c in names if c in colls or "*" in colls}
        return found

    def _write_restore(
        self,
        job: Job,
        client: pymongo.MongoClient,
        path: Path,
        plan: RestorePlan,
        options: RestoreOptions,
        tool: str | None,
        oplog: OplogSummary,
    ) -> RestoreResult:
        def progress(state: RestoreProgress) -> None:
            job.progress.update(
                phase=state.phase,
                bytes=state.bytes,
                documents=state.documents,
                namespacesDone=state.namespaces_done,
                namespacesTotal=state.namespaces_total,
            )

        try:
            if tool is None:
                with open_archive(path, self._age_identities) as (stream, _, _):
                    return NativeRestore(client, plan, options, progress, self.cancel).run(stream)
            if path.name.endswith(".age"):
                raise RestoreError(
                    "the mongorestore engine cannot read age-encrypted archives; use --engine native"
                )
            if isinstance(path, RemoteArchive):
                raise RestoreError(
                    f"the mongorestore engine reads local files only and {path.describe()} is only in "
                    f"the bucket; use --engine native"
                )
            outcome = self._mongorestore(tool, path, options, plan)
        except (RestoreError, VerifyFailed) as exc:
            raise JobFailed(f"restore failed: {exc}", "restore") from None
        except PyMongoError as exc:
            raise JobFailed(f"restore failed: MongoDB error: {error_text(exc)}", "restore") from None
        restored = RestoreResult(oplog={"replayed": plan.replay_oplog} if plan.replay_oplog else None)
        failed = outcome.failed or 0
        for p in plan.namespaces:
            restored.namespaces[p.target] = NamespaceOutcome(inserted=p.documents if not failed else 0)
        restored.documents = outcome.restored if outcome.restored is not None else plan.documents
        restored.failed_documents = restored.error_count = failed
        if failed:
            restored.errors.append({"namespace": None, "message": "; ".join(outcome.stderr_tail[-3:])})
        return restored

    def _safety_backup(self, job: Job, namespaces: list[str]) -> Entry:
        """A backup of exactly the namespaces the restore will overwrite, through the backup path."""
        tool = self.settings.engine == "mongodump"
        helper = BackupService(
            self.settings.replace(
                database="",
                ns_include=tuple(_exact_pattern(ns, tool) for ns in namespaces),
                ns_exclude=(),
                oplog="off",
            )
        )
        helper.cancel = self.cancel
        safety = self.new_job("backup", SAFETY_TRIGGER, restoreJobId=job.id, namespaces=namespaces)
        safety.started_at, safety.state = iso_utc(utc_now()), "running"
        job.progress.update(phase="safety-backup", safetyBackupJobId=safety.id)
        log.info(
            "restore job %s: safety backup of %s", job.id, ", ".join(namespaces), extra={"job_id": job.id}
        )
        try:
            entry = helper._backup(safety)
        except JobFailed as exc:
            safety.state, safety.error, safety.stage = "failed", str(exc), exc.stage
            raise JobFailed(
                f"the safety backup before the restore failed ({exc}); nothing was restored "
                f"(--no-safety-backup skips it)",
                "restore",
            ) from None
        finally:
            safety.finished_at = iso_utc(utc_now())
        safety.state = "succeeded"
        safety.result = {"fileName": entry["fileName"], "sizeBytes": entry.get("sizeBytes")}
        return entry


def _as_failure(exc: BaseException, stage: str, name: str) -> JobFailed:
    if isinstance(exc, JobFailed):
        return exc
    if isinstance(exc, DumpError):
        return JobFailed(str(exc), exc.stage)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return JobFailed(
            f"disk full while writing {name}; the partial file was removed, older archives are intact "
            f"(free space: df -h, or run sidecar prune)",
            "write",
        )
    if isinstance(exc, OSError):
        return JobFailed(f"cannot write {name}: {exc.strerror or exc}", "write")
    if isinstance(exc, PyMongoError):
        return JobFailed(f"MongoDB error during {stage}: {exc}", "dump" if stage == "write" else stage)
    return JobFailed(f"{type(exc).__name__}: {exc}", stage)


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _exact_pattern(ns: str, tool: bool) -> str:
    """A namespace as an --nsInclude pattern matching only itself (mongodump escapes with a backslash)."""
    if tool:
        return ns.replace("\\", "\\\\").replace("*", "\\*")
    return "".join(f"[{c}]" if c in "*?[" else c for c in ns)
