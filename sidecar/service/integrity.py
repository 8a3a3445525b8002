"""Integrity tests and restores: the verify and restore jobs of ``BackupService``.

A mixin so that every job stays one service with one lock, one job record and one set of listeners;
it uses the core's ``_running``, ``new_job`` and ``_backup`` (the safety backup before a restore).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pymongo
from pymongo.errors import PyMongoError

from sidecar.config import Settings
from sidecar.engine.mongodump import find_tool
from sidecar.engine.mongorestore import MongorestoreResult, run_mongorestore
from sidecar.engine.oplog_replay import OplogSummary, server_has_apply_ops
from sidecar.engine.restore import (
    NamespaceOutcome,
    NativeRestore,
    RestoreProgress,
    RestoreResult,
    check_counts,
)
from sidecar.engine.restore_errors import RestoreError, error_text
from sidecar.engine.restore_plan import (
    API_WORDING,
    ArchiveIds,
    Renamer,
    RestoreOptions,
    RestorePlan,
    TargetsInUse,
    Wording,
    conflict_message,
    find_collisions,
    inspect_targets,
    plan_restore,
)
from sidecar.jobs import Job, utc_now
from sidecar.service.base import JobFailed, connect, log
from sidecar.store.backends import RemoteArchive, archive_source
from sidecar.store.catalog import (
    SAFETY_TRIGGER,
    STATUS_COMPLETED,
    Catalog,
    Entry,
    find_entry,
    full_backups,
    iso_utc,
)
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


class IntegrityJobs:
    settings: Settings
    catalog: Catalog
    cancel: threading.Event

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

        identity_file = self.settings.age_identity_file
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
        uri = self.settings.drill_mongodb_uri or self.settings.mongodb_uri
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
        wording: Wording = API_WORDING,
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
            return self._restore(
                job, path, entry, options, safety_backup=safety_backup, engine=engine, wording=wording
            )

    def _restore(
        self,
        job: Job,
        path: Path,
        entry: Entry | None,
        options: RestoreOptions,
        *,
        safety_backup: bool,
        engine: str,
        wording: Wording = API_WORDING,
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
        oplog, ids = OplogSummary(), ArchiveIds()
        tool = None
        if engine == "mongorestore":
            tool = find_tool(self.settings.mongorestore_path)
            if tool is None:
                raise JobFailed(
                    f"{self.settings.mongorestore_path!r} is not on PATH (restore engine)", "restore"
                )
        scan = self._verify_for_restore(job, path, entry, oplog, ids)
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
            collisions = find_collisions(client, plan, ids, drop=options.drop)
            result["collisions"] = [c.as_json() for c in collisions]
            if any(c.refused for c in collisions) and options.dry_run:
                result["warnings"] = [conflict_message(collisions, wording, dry_run=True)]
            elif any(c.refused for c in collisions):
                refusal = TargetsInUse(collisions, wording)
                raise JobFailed(str(refusal), "restore") from refusal
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
                result["safetyBackup"] = self._safety_backup(job, touched, wording)["fileName"]
            else:
                result["safetyBackup"] = None
                if touched:
                    result["safetyBackupSkipped"] = f"opted out ({wording.no_safety_backup})"
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
        self, job: Job, path: Path, entry: Entry | None, oplog: OplogSummary, ids: ArchiveIds
    ) -> ArchiveScan:
        def on_chunk(chunk: Any) -> None:
            ids.feed(chunk)
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

    def _safety_backup(self, job: Job, namespaces: list[str], wording: Wording = API_WORDING) -> Entry:
        """A backup of exactly the namespaces the restore will overwrite, through the backup path."""
        tool = self.settings.engine == "mongodump"
        helper = type(self)(  # the same service, narrowed to the namespaces about to be overwritten
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
                f"({wording.no_safety_backup} skips it)",
                "restore",
            ) from None
        finally:
            safety.finished_at = iso_utc(utc_now())
        safety.state = "succeeded"
        safety.result = {"fileName": entry["fileName"], "sizeBytes": entry.get("sizeBytes")}
        return entry


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _exact_pattern(ns: str, tool: bool) -> str:
    """A namespace as an --nsInclude pattern matching only itself (mongodump escapes with a backslash)."""
    if tool:
        return ns.replace("\\", "\\\\").replace("*", "\\*")
    return "".join(f"[{c}]" if c in "*?[" else c for c in ns)
