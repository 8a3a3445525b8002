"""The endpoints of the runbook, plus job status, health, metrics and the API docs.

Handlers never block: catalog reads and jobs run in worker threads; health, metrics and the log tail
are read from memory. Long jobs answer 202 with the job and a Location; ``?wait=true`` waits for the
end and answers like the runbook's synchronous curl.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sidecar import __version__
from sidecar.alerts import evaluate, fetch_alertmanager
from sidecar.api import validation as v
from sidecar.api.auth import ADMIN, OPEN, READ, requires
from sidecar.api.errors import ApiError
from sidecar.api.state import SIDECAR_KEY, Sidecar
from sidecar.engine.restore_plan import TargetsInUse
from sidecar.integrity.failure import LEVELS as VERIFY_LEVELS
from sidecar.jobs import Job, JobBusy
from sidecar.logs import LEVELS
from sidecar.pitr.find.query import DEFAULT_LIMIT, MAX_LIMIT, FindError, FindQuery
from sidecar.pitr.find.search import find_operations
from sidecar.pitr.planning.restore_point import PointRefused, PointTarget
from sidecar.pitr.status import pitr_status
from sidecar.service import JobFailed, ShuttingDown
from sidecar.service.restore_request import RestoreRequest
from sidecar.store.catalog import SAFETY_TRIGGER, CatalogError, Status, find_entry, newest_usable

JOBS_PATH = "/api/backup/jobs"


def _sidecar(request: web.Request) -> Sidecar:
    return request.app[SIDECAR_KEY]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False, default=str),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def _catalog(sidecar: Sidecar) -> list[dict[str, Any]]:
    try:
        return await asyncio.to_thread(sidecar.service.list_backups)
    except CatalogError as exc:
        raise ApiError(500, "catalog_unreadable", str(exc)) from None


# -- jobs ----------------------------------------------------------------------------------------


async def _start_job(
    request: web.Request,
    kind: str,
    work: Callable[[Job], Any],
    wait: bool,
    respond: Callable[[Job, Any], dict[str, Any]] | None = None,
    *,
    until: str = "started",
    **params: Any,
) -> web.Response:
    """Start a job; without ``wait``, answer 202 once it reaches ``until`` (a job that ended before
    that, refused or done, answers as with ``wait``)."""
    sidecar = _sidecar(request)
    try:
        job, task = await sidecar.runner.submit(kind, "manual", work, until=until, **params)
    except ShuttingDown as exc:
        raise ApiError(503, "shutting_down", str(exc), headers={"Retry-After": "30"}) from None
    except JobBusy as exc:
        holder = exc.holder
        raise ApiError(
            409,
            "job_running",
            f"another {holder.get('kind', 'job')} is running (job {holder.get('id', '?')}); "
            f"try again when it has finished",
            runningJobId=holder.get("id"),
            runningJobKind=holder.get("kind"),
        ) from None
    location = f"{JOBS_PATH}/{job.id}"
    if not wait and not task.done():
        return _json({"job": job.as_json()}, 202, {"Location": location})
    try:
        result = await asyncio.shield(task)  # a client that gives up must not cancel the job
    except JobFailed as exc:
        raise _job_failure(job, exc) from None
    except Exception as exc:
        raise ApiError(
            500, "job_failed", f"{kind} failed: {type(exc).__name__}: {exc}", job=job.as_json()
        ) from None
    body = {"job": job.as_json()}
    if respond is not None:
        body.update(respond(job, result))
    return _json(body, 200, {"Location": location})


def _job_failure(job: Job, exc: JobFailed) -> ApiError:
    if exc.stage == "connect":
        return ApiError(503, "mongodb_unavailable", str(exc), stage=exc.stage, job=job.as_json())
    if exc.stage == "verify":
        return ApiError(422, "verification_failed", str(exc), stage=exc.stage, job=job.as_json())
    if isinstance(exc.__cause__, TargetsInUse):  # a restore without drop into collections in use
        collisions = [c.as_json() for c in exc.__cause__.collisions]
        return ApiError(409, "restore_conflict", str(exc), collisions=collisions, job=job.as_json())
    if isinstance(exc.__cause__, PointRefused):  # a restore to a point outside every window
        nearest = exc.__cause__.nearest
        return ApiError(422, "point_not_restorable", str(exc), nearest=nearest, job=job.as_json())
    if exc.stage == "restore":  # refused or partly failed by the data: nothing the server did wrong
        return ApiError(422, "restore_failed", str(exc), stage=exc.stage, job=job.as_json())
    return ApiError(500, "job_failed", str(exc), stage=exc.stage, job=job.as_json())


@requires(READ)
async def get_job(request: web.Request) -> web.Response:
    v.query(request, ())
    job_id = request.match_info["id"]
    job = _sidecar(request).service.jobs.get(job_id)
    if job is None:
        raise ApiError(
            404, "job_not_found", f"no job {job_id[:40]!r} (the newest 100 jobs are kept since the start)"
        )
    return _json({"job": job.as_json()})


# -- /api/backup ---------------------------------------------------------------------------------


@requires(READ)
async def backup_status(request: web.Request) -> web.Response:
    v.query(request, ())
    sidecar = _sidecar(request)
    entries = await _catalog(sidecar)
    archives = [e for e in entries if e.get("status") == Status.COMPLETED]
    running = sidecar.runner.running_job()
    s = sidecar.settings
    return _json(
        {
            "status": "stopping" if sidecar.stopping else ("running" if running else "idle"),
            "currentJob": running.as_json() if running else None,
            # the newest backup run, whatever its outcome; a restore's safety copy is no backup run
            "lastBackup": next((e for e in reversed(entries) if e.get("trigger") != SAFETY_TRIGGER), None),
            "lastSuccessfulBackup": newest_usable(entries),
            "nextBackupAt": sidecar.scheduler.next_run("backup"),
            "schedule": {"cron": s.schedule or None, "timezone": s.timezone},
            "retention": {"days": s.retention_days, "minCount": s.retention_min_count},
            "backupDir": str(s.backup_dir),
            "backups": {
                "total": len(entries),
                "completed": len(archives),
                "failed": sum(1 for e in entries if e.get("status") == Status.FAILED),
                "totalSizeBytes": sum(int(e.get("sizeBytes", 0)) for e in archives),
            },
        }
    )


@requires(READ)
async def backup_list(request: web.Request) -> web.Response:
    params = v.query(request, ("status", "limit"))
    status = v.choice(params, "status", ("completed", "failed", "running"))
    limit = v.integer(params, "limit", 1000, 1, 10000)
    entries = await _catalog(_sidecar(request))
    newest_first = [e for e in reversed(entries) if status is None or e.get("status") == status][:limit]
    return _json({"backups": newest_first, "count": len(newest_first), "order": "newest-first"})


@requires(READ)
async def backup_pitr(request: web.Request) -> web.Response:
    """The oplog archive: windows, gaps, lag, the server's oplog window (cached while archiving)."""
    params = v.query(request, ("verify",))
    deep = v.flag(params, "verify")
    sidecar = _sidecar(request)
    state = sidecar.pitr.state
    server = state.server_window if state.running else None
    try:
        status = await asyncio.to_thread(pitr_status, sidecar.settings, deep=deep, state=state, server=server)
    except CatalogError as exc:
        raise ApiError(500, "catalog_unreadable", str(exc)) from None
    return _json(status)


@requires(READ)
async def backup_oplog(request: web.Request) -> web.Response:
    """The archived operations that match (``sidecar oplog find --json``)."""
    params = v.query(request, ("ns", "op", "since", "until", "id", "limit"))
    limit = v.integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    ns = params.get("ns")
    try:
        query = FindQuery.parse(
            [ns] if ns is not None else [],
            params.get("op"),
            params.get("since"),
            params.get("until"),
            params.get("id"),
            limit,
        )
    except FindError as exc:
        raise ApiError(400, "invalid_parameter", f"query parameter {exc}") from None
    try:
        listing = await asyncio.to_thread(find_operations, _sidecar(request).settings, query)
    except CatalogError as exc:
        raise ApiError(500, "catalog_unreadable", str(exc)) from None
    return _json(listing)


@requires(ADMIN)
async def backup_create(request: web.Request) -> web.Response:
    params = v.query(request, ("wait",))
    wait = v.flag(params, "wait")
    await v.json_body(request, {})
    sidecar = _sidecar(request)

    def respond(job: Job, entry: Any) -> dict[str, Any]:
        return {"backup": entry}

    return await _start_job(request, "backup", sidecar.service.run_backup, wait, respond)


TEST_FIELDS = {
    "level": v.Field("enum", choices=VERIFY_LEVELS),
    "fileName": v.Field("fileName"),
}


async def _usable_archive(sidecar: Sidecar, name: str | None) -> str:
    """The named catalog entry (must be completed) or the newest usable backup."""
    entries = await _catalog(sidecar)
    if name is None:
        latest = newest_usable(entries)
        if latest is None:
            raise ApiError(
                404,
                "backup_not_found",
                "no completed backup in the catalog is usable (not a safety copy, newest integrity "
                "test passed or not run); take one with POST /api/backup/create",
            )
        return latest["fileName"]
    entry = find_entry(entries, name)
    if entry is None:
        raise ApiError(404, "backup_not_found", f"{name} is not in the catalog (see GET /api/backup/list)")
    if entry.get("status") != Status.COMPLETED:
        raise ApiError(
            409, "backup_not_usable", f"{name} is {entry.get('status')}, not completed: it cannot be used"
        )
    return name


@requires(ADMIN)
async def backup_test(request: web.Request) -> web.Response:
    params = v.query(request, ("wait",))
    wait = v.flag(params, "wait")
    body = await v.json_body(request, TEST_FIELDS)
    sidecar = _sidecar(request)
    level = body.get("level", "full")
    if level == "pitr":
        return await _pitr_test(request, sidecar, body, wait)
    name = await _usable_archive(sidecar, body.get("fileName"))

    def work(job: Job) -> Any:
        return sidecar.service.run_verify(job, file_name=name, level=level)

    def respond(job: Job, result: Any) -> dict[str, Any]:
        return {"verification": result}

    return await _start_job(request, "verify", work, wait, respond, level=level, fileName=name)


async def _pitr_test(
    request: web.Request, sidecar: Sidecar, body: dict[str, Any], wait: bool
) -> web.Response:
    """The pitr level: the newest two base backups the oplog archive joins, so no fileName."""
    if "fileName" in body:
        raise ApiError(
            400,
            "invalid_field",
            "level pitr checks the newest two base backups the oplog archive joins: no fileName",
        )

    def respond(job: Job, result: Any) -> dict[str, Any]:
        return {"verification": result}

    return await _start_job(request, "verify", sidecar.service.run_pitr_verify, wait, respond, level="pitr")


RESTORE_FIELDS = {
    "fileName": v.Field("fileName"),
    "pointInTime": v.Field("str", max_length=64),  # ISO-8601 with a zone, or t:i
    "beforeOp": v.Field("str", max_length=32),  # t:i
    "nsInclude": v.Field("patterns"),
    "nsExclude": v.Field("patterns"),
    "nsFrom": v.Field("patterns"),
    "nsTo": v.Field("patterns"),
    "drop": v.Field("bool"),
    "dryRun": v.Field("bool"),
    "safetyBackup": v.Field("bool"),
    "oplogReplay": v.Field("bool"),
    "engine": v.Field("enum", choices=("native", "mongorestore")),
}


@requires(ADMIN)
async def backup_restore(request: web.Request) -> web.Response:
    params = v.query(request, ("wait",))
    wait = v.flag(params, "wait")
    body = await v.json_body(request, RESTORE_FIELDS)
    if len(body.get("nsFrom", ())) != len(body.get("nsTo", ())):
        raise ApiError(
            400, "invalid_field", "nsFrom and nsTo go together: give as many nsTo patterns as nsFrom ones"
        )
    sidecar = _sidecar(request)
    point = _restore_point(body)
    name = await _usable_archive(sidecar, body["fileName"]) if point is None else None
    asked = RestoreRequest.from_json(body, file_name=name, point=point).for_settings(sidecar.settings)

    def work(job: Job) -> Any:
        return sidecar.service.run_restore(job, asked)

    def respond(job: Job, result: Any) -> dict[str, Any]:
        return {"restore": result}

    # the runbook's call does not wait: a refusal (verification, collisions) still answers 4xx, and 202
    # means the archive was verified and the writes begin
    return await _start_job(request, "restore", work, wait, respond, until="writing", **asked.as_json())


def _restore_point(body: dict[str, Any]) -> PointTarget | None:
    """Exactly one of fileName, pointInTime and beforeOp: the point to restore to, if one is given."""
    given = [name for name in ("fileName", "pointInTime", "beforeOp") if name in body]
    if not given:
        raise ApiError(400, "missing_field", "field fileName (or pointInTime, or beforeOp) is required")
    if len(given) > 1:
        raise ApiError(
            400, "invalid_field", f"give one of fileName, pointInTime and beforeOp, not {' and '.join(given)}"
        )
    if given[0] == "fileName":
        return None
    try:
        if given[0] == "beforeOp":
            return PointTarget.before_op(body["beforeOp"])
        return PointTarget.to_time(body["pointInTime"])  # RFC 3339: a time has its zone
    except ValueError as exc:
        raise ApiError(400, "invalid_field", f"field {given[0]}: {exc}") from None


# -- /api/v1/monitoring --------------------------------------------------------------------------


@requires(READ)
async def monitoring_status(request: web.Request) -> web.Response:
    v.query(request, ())
    sidecar = _sidecar(request)
    entries = await _catalog(sidecar)
    reconciliation = await asyncio.to_thread(sidecar.service.catalog.reconcile, sidecar.settings.file_prefix)
    running = sidecar.runner.running_job()
    archives = [e for e in entries if e.get("status") == Status.COMPLETED]
    return _json(
        {
            "status": health_state(sidecar)[0],
            "service": {
                "version": __version__,
                "pid": os.getpid(),
                "startedAt": _iso(sidecar.started_at),
                "uptimeSeconds": round(time.time() - sidecar.started_at, 1),
                "acceptingJobs": sidecar.runner.accepting,
            },
            "health": health_body(sidecar),
            "currentJob": running.as_json() if running else None,
            "lastSuccessfulBackup": newest_usable(entries),
            # where the newest drill and pitr check ran and what they wrote there
            "proofs": sidecar.metrics.catalog_summary.proofs,
            "scheduler": sidecar.scheduler.status(),
            "catalog": {
                "entries": len(entries),
                "completed": len(archives),
                "consistent": reconciliation.clean,
                **reconciliation.as_json(),
            },
            "settings": sidecar.settings.public_view(),
        }
    )


@requires(READ)
async def monitoring_metrics(request: web.Request) -> web.Response:
    v.query(request, ())
    return _json(_sidecar(request).metrics.summary())


@requires(READ)
async def monitoring_logs(request: web.Request) -> web.Response:
    params = v.query(request, ("level", "since", "limit", "text", "jobId"))
    level = v.choice(params, "level", LEVELS)
    since = v.moment(params, "since")
    limit = v.integer(params, "limit", 100, 1, 5000)
    text = params.get("text")
    if text is not None and len(text) > 200:
        raise ApiError(400, "invalid_parameter", "query parameter text is longer than 200 characters")
    job_id = params.get("jobId")
    records = _sidecar(request).log_tail.query(
        level=level, since=since, limit=limit, text=text, job_id=job_id
    )
    return _json({"logs": records, "count": len(records)})


@requires(READ)
async def monitoring_alerts(request: web.Request) -> web.Response:
    v.query(request, ())
    sidecar = _sidecar(request)
    summary = sidecar.metrics.catalog_summary
    alerts = evaluate(
        sidecar.settings, sidecar.service, sidecar.health, summary=summary, pitr=sidecar.metrics.pitr
    )
    body: dict[str, Any] = {"alerts": alerts, "active": sum(1 for a in alerts if a.get("active"))}
    url = sidecar.settings.alertmanager_url
    if url:
        try:
            body["alertmanager"] = {"url": url, "alerts": await asyncio.to_thread(fetch_alertmanager, url)}
        except (OSError, ValueError) as exc:  # unreachable or not an Alertmanager: say so, keep ours
            body["alertmanager"] = {"url": url, "error": f"cannot read active alerts: {exc}"}
    return _json(body)


# -- open endpoints ------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    import datetime as dt

    from sidecar.text import iso_utc

    return iso_utc(dt.datetime.fromtimestamp(epoch, dt.UTC))


def health_state(sidecar: Sidecar) -> tuple[str, list[str]]:
    snap = sidecar.health.snapshot
    s = sidecar.settings
    problems: list[str] = []
    if sidecar.stopping:
        return "stopping", ["the sidecar is shutting down"]
    if not snap.checked_at:
        return "starting", ["no health probe has run yet"]
    if not snap.mongodb_up:
        problems.append(snap.error or "MongoDB does not answer")
    if snap.disk_total_bytes:
        ratio = snap.disk_free_bytes / snap.disk_total_bytes
        if ratio < s.alert_disk_free_min_ratio:
            problems.append(
                f"backup disk {ratio:.1%} free, below "
                f"SIDECAR_ALERT_DISK_FREE_MIN_RATIO={s.alert_disk_free_min_ratio}"
            )
        if snap.disk_free_bytes < s.min_free_bytes:
            problems.append(
                f"backup disk has {snap.disk_free_bytes} bytes free, below SIDECAR_MIN_FREE_BYTES"
            )
    elif snap.error:
        problems.append(snap.error)
    archiver = pitr_problem(sidecar)
    if archiver:
        problems.append(archiver)
    return ("degraded" if problems else "ok"), problems


def pitr_problem(sidecar: Sidecar) -> str | None:
    """The oplog archiver refused to run, stands by behind another one, or waits to restart."""
    runner, state = sidecar.pitr, sidecar.pitr.state
    if sidecar.settings.pitr == "off" or state.enabled is False:
        return None
    redact = sidecar.log_tail.redact
    if runner.fatal:
        return f"oplog archiver not running: {redact(runner.fatal)}"
    if state.error and not state.running:
        return f"oplog archiver not tailing: {redact(state.error)}"
    return None


def health_body(sidecar: Sidecar) -> dict[str, Any]:
    snap = sidecar.health.snapshot
    status, problems = health_state(sidecar)
    return {
        "status": status,
        "degraded": problems,
        "checkedAt": _iso(snap.checked_at) if snap.checked_at else None,
        "mongodb": {
            "up": snap.mongodb_up,
            "pingSeconds": snap.ping_seconds,
            "version": snap.server_version,
            "replsetState": snap.replset_state,
            "replicationLagSeconds": snap.replication_lag_seconds,
            "error": snap.error,
        },
        "disk": {
            "path": str(sidecar.settings.backup_dir),
            "totalBytes": snap.disk_total_bytes,
            "freeBytes": snap.disk_free_bytes,
            "freeInodes": snap.disk_free_inodes,
        },
    }


@requires(OPEN)
async def health(request: web.Request) -> web.Response:
    sidecar = _sidecar(request)
    running = sidecar.runner.running_job()
    body = health_body(sidecar)
    body["version"] = __version__
    body["job"] = {"id": running.id, "kind": running.kind, "state": running.state} if running else None
    return _json(body)


@requires("metrics")
async def metrics(request: web.Request) -> web.Response:
    payload, content_type = _sidecar(request).metrics.render()
    return web.Response(body=payload, headers={"Content-Type": content_type})
