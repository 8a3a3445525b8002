"""The restore job: an archive (all of it, or some namespaces, renamed or not) verified in full before
the first write, a safety backup of what it overwrites, the writes, and the runbook's count check.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import pymongo
from pymongo.errors import InvalidName, PyMongoError

from sidecar.engine.mongorestore import MongorestoreResult, run_mongorestore
from sidecar.engine.namespaces import Renamer
from sidecar.engine.replay.archive_oplog import ArchiveOplog
from sidecar.engine.replay.engine import ReplayPlan
from sidecar.engine.restore import NamespaceOutcome, NativeRestore, RestoreResult, check_counts
from sidecar.engine.restore_errors import RestoreError, error_text
from sidecar.engine.restore_plan import (
    API_WORDING,
    ArchiveIds,
    RestoreOptions,
    RestorePlan,
    TargetsInUse,
    Wording,
    conflict_message,
    find_collisions,
    inspect_targets,
    plan_restore,
)
from sidecar.integrity.checks import restore_problems
from sidecar.integrity.failure import VerifyFailed
from sidecar.integrity.scan import ArchiveScan, scan_archive
from sidecar.jobs import Job
from sidecar.pitr.find.later import Discarded, later_writes
from sidecar.service.backup import backup_and_copy, dump_options
from sidecar.service.context import JobContext, JobFailed, connect, log
from sidecar.service.point import PointReplay, prepare_point
from sidecar.service.restore_request import RestoreRequest
from sidecar.service.verify import resolve_archive
from sidecar.store.catalog import SAFETY_TRIGGER, Entry
from sidecar.store.source import ArchiveReadError, ArchiveSource


@dataclass
class RestoreRun:
    """One restore job's inputs, as its steps pass them on."""

    job: Job
    path: ArchiveSource  # pinned for the job: every read gets the bytes the verify pass read
    entry: Entry | None
    options: RestoreOptions
    engine: str
    tool: str | None
    result: dict[str, Any]
    wording: Wording  # how messages name the options: the API's fields or the CLI's flags
    ids: ArchiveIds  # the archive's _ids, kept by the verify pass for the collision check
    point: PointReplay | None = None  # a restore to a point: the slices replayed after the base
    oplog: ArchiveOplog | None = None  # a full restore's: the archive's own oplog, kept to plan its replay
    replay_replaces: tuple[str, ...] = ()  # --drop: targets only the point's replay writes, dropped first

    @property
    def name(self) -> str:
        return self.entry["fileName"] if self.entry else str(self.path)


def run_restore(
    ctx: JobContext,
    job: Job | None = None,
    request: RestoreRequest | None = None,
    *,
    wording: Wording = API_WORDING,
    **fields: Any,
) -> dict[str, Any]:
    """Restore an archive after verifying it fully and taking a safety backup of what it overwrites.
    ``request``, or its fields as keywords (``file_name=``, ``ns_include=``...). With a ``point``, the
    base backup and slices that reach it (``pitr.plan``) instead of the file: the slices are verified
    and their replay planned before the first write too. Returns the restore report."""
    request = (request or RestoreRequest(**fields)).for_settings(ctx.settings)
    options, engine, point = request.options, str(request.engine), request.point
    file_name, latest, safety_backup = request.file_name, request.latest, request.safety_backup
    job = job or ctx.new_job("restore", **request.as_json())
    with ctx.running(job), contextlib.ExitStack() as stack:
        job.stage = "verify"
        follow = prepare_point(ctx.settings, point, options) if point is not None else None
        if follow is not None:
            stack.callback(follow.close)
            # the base's own oplog is replayed with the slices, under the same filters and renaming
            file_name, options = follow.plan.base, replace(options, oplog_replay=False)
        path, entry = resolve_archive(ctx, file_name, latest=latest, stage="restore")
        result: dict[str, Any] = {"fileName": entry["fileName"] if entry else str(path), "engine": engine}
        result["dryRun"] = options.dry_run
        if follow is not None:
            result["pointInTime"] = follow.as_json()
        job.result = result
        tool, ids = _tool(ctx, engine), ArchiveIds(options, only=_occupied_sources(ctx, entry, options))
        run = RestoreRun(job, path, entry, options, engine, tool, result, wording, ids, follow)
        if follow is None and options.oplog_replay:
            run.oplog = ArchiveOplog()
            stack.callback(run.oplog.close)
        try:
            with path.pinned():  # verified before the first write: the writes read the verified bytes
                return _restore(ctx, run, safety_backup=safety_backup)
        except ArchiveReadError as exc:
            raise JobFailed(f"refusing to restore {run.name}: {exc}; nothing was written", "verify") from None


def _occupied_sources(ctx: JobContext, entry: Entry | None, options: RestoreOptions) -> set[str] | None:
    """The archive's namespaces whose targets hold documents now: the only ones whose _ids the
    collision check needs (memory), or None when that is not known before the scan."""
    manifest = (entry or {}).get("namespaces")
    if options.drop:
        return set()
    if manifest is None:
        return None
    with connect(ctx.settings) as client:
        try:
            rename = Renamer(options.ns_from, options.ns_to)
            occupied = set()
            for ns in manifest:
                db, _, coll = rename(ns).partition(".")
                if client[db][coll].find_one({}, {"_id": 1}) is not None:
                    occupied.add(ns)
            return occupied
        except (ValueError, InvalidName):
            return None  # the restore refuses these names itself, with its own message


def _tool(ctx: JobContext, engine: str) -> str | None:
    if engine != "mongorestore":
        return None
    tool = shutil.which(ctx.settings.mongorestore_path)
    if tool is None:
        raise JobFailed(f"{ctx.settings.mongorestore_path!r} is not on PATH (restore engine)", "restore")
    return tool


def _restore(ctx: JobContext, run: RestoreRun, *, safety_backup: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    result, options = run.result, run.options
    try:
        renamer = Renamer(options.ns_from, options.ns_to)
    except ValueError as exc:
        raise JobFailed(f"{exc}; nothing was written", "restore") from None
    # 1. The whole archive verified before the first write.
    scan = _verify_for_restore(ctx, run)
    result["verified"] = {
        "documents": scan.documents,
        "uncompressedBytes": scan.uncompressed_bytes,
        "sha256": scan.sha256,
        "seconds": round(scan.seconds, 3),
    }
    plan = _plan(run, scan, renamer)
    oplog: ReplayPlan | None = None  # a full restore's replay of the archive's own oplog
    if plan.replay_oplog and run.oplog is not None:
        oplog = run.oplog.plan()
        result["oplog"] = run.oplog.summary(oplog)
    # 2. What is there now, and so what the restore would overwrite.
    run.job.stage = "connect"
    client = connect(ctx.settings)
    with client:
        run.job.stage = "restore"
        touched = _inspect(client, run, plan, oplog)
        discarded = _discarded(ctx, run, plan)
        if options.dry_run:
            if discarded is not None and discarded.total:
                result.setdefault("warnings", []).append(discarded.message(None, dry_run=True))
            result["safetyBackup"] = {"wouldBackUp": touched} if safety_backup and touched else None
            if run.tool is not None:
                result["mongorestore"] = _mongorestore(ctx, run, plan).as_json()
            result["durationSeconds"] = round(time.monotonic() - t0, 3)
            return result
        # 3. The safety backup of what will be overwritten (the runbook's warning).
        ctx.writing(run.job)
        result["safetyBackup"] = None
        if touched and safety_backup:
            safety = _safety_backup(ctx, run.job, touched, run.wording)
            result.update(safetyBackup=safety["fileName"], safetyBackupJobId=safety["jobId"])
        elif touched:
            result["safetyBackupSkipped"] = f"opted out ({run.wording.no_safety_backup})"
        if discarded is not None and discarded.total:  # said before the first write of the restore
            warning = discarded.message(result.get("safetyBackup"), dry_run=False)
            log.warning("restore job %s: %s", run.job.id, warning, extra={"job_id": run.job.id})
            run.job.progress.notes.append(warning)
            result.setdefault("warnings", []).append(warning)
        # 4. The writes, 5. the runbook's post-restore verification.
        restored = _write_restore(ctx, client, run, plan)
        _report_writes(result, restored)
        changed = set(oplog.namespaces if oplog is not None else ())
        if run.point is not None:
            for ns in run.replay_replaces:  # --drop: what only the replay writes is replaced too
                db, _, coll = ns.partition(".")
                client[db].drop_collection(coll)
            result["pointInTime"]["replay"] = run.point.run(client, run.job.progress, ctx.cancel)
            changed |= set(run.point.namespaces)
        check = check_counts(client, plan, restored, changed)
        result["postRestoreCheck"] = check
    result["durationSeconds"] = round(time.monotonic() - t0, 3)
    _raise_for_outcome(run.name, plan, restored, check)
    return result


def _discarded(ctx: JobContext, run: RestoreRun, plan: RestorePlan) -> Discarded | None:
    """A ``--drop`` restore to a point: the archived writes after the point on what it replaces."""
    if run.point is None or not run.options.drop:
        return None
    replaced = {p.target for p in plan.namespaces} | set(run.point.namespaces)
    found = later_writes(ctx.settings, run.point.options.cut, run.point.plan.target.text, replaced)
    run.result["pointInTime"]["discarded"] = found.as_json()
    return found


def _plan(run: RestoreRun, scan: ArchiveScan, renamer: Renamer) -> RestorePlan:
    try:
        assert scan.prelude is not None
        plan = plan_restore(scan.prelude, scan.counts(), run.options, rename=renamer)
    except RestoreError as exc:
        raise JobFailed(f"{exc}; nothing was written", "restore") from None
    # the filters apply to a point's replay too: a collection created after the base is its alone
    if not plan.namespaces and not (run.point is not None and run.point.namespaces):
        where = " nor of its replay to the point" if run.point is not None else ""
        raise JobFailed(
            f"no namespace of {run.name}{where} matches the given filters; nothing was written", "restore"
        )
    return plan


def _inspect(
    client: pymongo.MongoClient, run: RestoreRun, plan: RestorePlan, oplog: ReplayPlan | None
) -> list[str]:
    """The target namespaces that exist now (what a safety backup covers); refuses a replay that
    cannot work before anything is written."""
    inspect_targets(client, plan, drop=run.options.drop)
    collisions = find_collisions(client, plan, run.ids, drop=run.options.drop)
    run.result["collisions"] = [c.as_json() for c in collisions]
    if any(c.refused for c in collisions) and run.options.dry_run:
        run.result["warnings"] = [conflict_message(collisions, run.wording, dry_run=True)]
    elif any(c.refused for c in collisions):
        refusal = TargetsInUse(collisions, run.wording)
        raise JobFailed(str(refusal), "restore") from refusal
    _check_replay_only_targets(client, run, plan)
    problem = _replay_problem(run.result.get("oplog"), run.engine)
    if problem and run.options.dry_run:
        run.result["oplog"]["problem"] = problem
    elif problem:
        raise JobFailed(f"{problem}; nothing was written", "restore")
    touched = set(plan.existing_targets())
    if oplog is not None:
        touched |= _existing(client, oplog.namespaces)
    if run.point is not None:
        touched |= _existing(client, run.point.namespaces)
    run.result.update(
        namespaces=[p.as_json() for p in plan.namespaces],
        skipped=plan.skipped,
        documents=plan.documents,
        bytes=plan.bytes,
        overwrites=sorted(touched),
    )
    return sorted(touched)


def _check_replay_only_targets(client: pymongo.MongoClient, run: RestoreRun, plan: RestorePlan) -> None:
    """Targets that only the point's replay writes (collections created after the base) and that hold
    documents now: replaced with --drop, else refused, as the base's colliding targets are."""
    if run.point is None:
        return
    from_base = {p.target for p in plan.namespaces}
    occupied = []
    for ns in run.point.namespaces:
        db, _, coll = ns.partition(".")
        if ns in from_base or not coll or "$" in coll or "*" in coll:
            continue
        if client[db][coll].find_one({}, {"_id": 1}) is not None:
            occupied.append(ns)
    if not occupied or run.options.drop:
        run.replay_replaces = tuple(occupied)
        return
    message = (
        f"refusing to restore without drop: {', '.join(occupied)} hold(s) documents, and only the replay "
        f"to the point writes it (created after base backup {run.name}); restore under a new name "
        f"({run.wording.rename}) or with {run.wording.drop}, which replaces it"
    )
    if run.options.dry_run:
        run.result.setdefault("warnings", []).append(message)
        return
    raise JobFailed(f"{message}; nothing was written", "restore")


def _report_writes(result: dict[str, Any], restored: RestoreResult) -> None:
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


def _raise_for_outcome(name: str, plan: RestorePlan, restored: RestoreResult, check: dict[str, Any]) -> None:
    if restored.error_count:
        raise JobFailed(
            f"restore of {name} finished with {restored.error_count} failed write(s) "
            f"({restored.documents} of {plan.documents} documents written; first: {restored.first_error})",
            "restore",
        )
    if not check["ok"]:
        raise JobFailed(
            f"restore of {name} finished but document counts differ from the archive: "
            f"{'; '.join(check['mismatches'][:3])}",
            "restore",
        )


def _replay_problem(summary: dict[str, Any] | None, engine: str) -> str | None:
    """Why the oplog of a full restore could not be replayed, known before the first write: entries
    the engine cannot replay (with applyOps or without it, translated into ordinary writes)."""
    if summary is None or engine != "native" or not summary["unsupported"]:
        return None
    return (
        f"the archive's oplog holds entries this engine cannot replay ({summary['unsupported'][0]}); "
        f"restore with --no-oplog-replay, or with the mongorestore engine"
    )


def _verify_for_restore(ctx: JobContext, run: RestoreRun) -> ArchiveScan:
    def on_chunk(chunk: Any) -> None:
        run.ids.feed(chunk)
        if chunk.namespace.is_oplog:
            if run.oplog is not None:
                run.oplog.feed(chunk)
            if run.point is not None:
                run.point.feed_base(chunk)

    run.job.progress.begin("verify")
    try:
        scan = scan_archive(
            run.path,
            manifest=(run.entry or {}).get("namespaces"),
            on_chunk=on_chunk,
            progress=run.job.progress,
            cancel=ctx.cancel,
        )
    except VerifyFailed as exc:
        raise JobFailed(
            f"refusing to restore {run.name}: {exc.reason}; nothing was written", "verify"
        ) from None
    problems = restore_problems(scan, run.entry)
    if problems:
        raise JobFailed(f"refusing to restore {run.name}: {problems[0]}; nothing was written", "verify")
    if run.point is not None:
        run.point.replan()
        run.result["pointInTime"] = run.point.as_json()
    return scan


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


def _mongorestore(ctx: JobContext, run: RestoreRun, plan: RestorePlan) -> MongorestoreResult:
    """The stock tool on the verified archive stream, with the same options (its dry run too)."""
    with run.path.open() as opened:
        return run_mongorestore(
            run.tool,  # type: ignore[arg-type]
            ctx.settings.mongodb_uri,
            opened.data,
            run.options,
            oplog_replay=plan.replay_oplog,
            cancel=ctx.cancel,
        )


def _write_restore(
    ctx: JobContext, client: pymongo.MongoClient, run: RestoreRun, plan: RestorePlan
) -> RestoreResult:
    try:
        if run.tool is None:
            with run.path.open() as opened:
                return NativeRestore(client, plan, run.options, run.job.progress, ctx.cancel).run(opened.data)
        run.job.progress.begin("mongorestore", len(plan.namespaces))
        outcome = _mongorestore(ctx, run, plan)
    except (RestoreError, VerifyFailed, ArchiveReadError) as exc:
        raise JobFailed(f"restore failed: {exc}", "restore") from None
    except PyMongoError as exc:
        raise JobFailed(f"restore failed: MongoDB error: {error_text(exc)}", "restore") from None
    failed = outcome.failed or 0
    namespaces = {p.target: NamespaceOutcome(inserted=0 if failed else p.documents) for p in plan.namespaces}
    restored = RestoreResult(namespaces, oplog={"replayed": plan.replay_oplog} if plan.replay_oplog else None)
    restored.documents = outcome.restored if outcome.restored is not None else plan.documents
    restored.failed_documents = restored.error_count = failed
    if failed:
        restored.errors.append({"namespace": None, "message": "; ".join(outcome.stderr_tail[-3:])})
    return restored


def _safety_backup(ctx: JobContext, job: Job, namespaces: list[str], wording: Wording) -> Entry:
    """A backup of exactly the namespaces the restore will overwrite: a job of its own (records,
    listeners, off-site copy) run inside the restore's, which holds the lock."""
    options = replace(
        dump_options(ctx),
        database="",
        ns_include=tuple(_exact_pattern(ns) for ns in namespaces),
        ns_exclude=(),
        oplog="off",
    )
    safety = ctx.new_job("backup", SAFETY_TRIGGER, restoreJobId=job.id, namespaces=namespaces)
    log.info("restore job %s: safety backup of %s", job.id, ", ".join(namespaces), extra={"job_id": job.id})
    job.progress.begin("safety-backup")
    try:
        with ctx.running(safety, within=job, precheck=False):
            entry, upload_error = backup_and_copy(ctx, safety, options)
    except JobFailed as exc:
        raise JobFailed(
            f"the safety backup before the restore failed ({exc}); nothing was restored "
            f"({wording.no_safety_backup} skips it)",
            "restore",
        ) from None
    if upload_error:  # the local copy is what a restore needs; the bucket's comes with the next backup
        log.warning("safety backup %s: %s", entry["fileName"], upload_error, extra={"job_id": safety.id})
    return entry


def _exact_pattern(ns: str) -> str:
    """A namespace as a pattern of the native engine's ``ns_include`` that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in ns)
