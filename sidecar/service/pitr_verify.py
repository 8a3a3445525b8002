"""The pitr verify job: the oplog archive replayed from base backup N-1 to base backup N
(``integrity/pitr.py``), on the drill server.

Recorded twice: in base N's catalog entry (``verification.pitr``, read by the metrics and alerts like
every level) and beside the slices (``oplog-slices.json`` ``verification.pitr``). It never sets base
N's ``lastVerification``: a failure says the slices do not carry N-1 to N, not that N is bad, so N
stays usable (its own levels decide that). With no two base backups the archive joins, the job
succeeds with ``skipped`` saying why: nothing is recorded, no archive is blamed; the age alert
(MongoBackupPitrVerifyTooOld) tells when that lasts.
"""

from __future__ import annotations

import time
from typing import Any

from sidecar.integrity.checks import record
from sidecar.integrity.failure import SERVER_CHECK, VerifyFailed
from sidecar.integrity.pitr import PitrCheck
from sidecar.jobs import Job
from sidecar.pitr.catalog import SliceCatalog
from sidecar.pitr.pair import BasePair, joined_pair
from sidecar.pitr.slices import oplog_dir
from sidecar.service.context import JobContext, JobFailed
from sidecar.service.verify import drill_client

LEVEL = "pitr"


def run_pitr_verify(ctx: JobContext, job: Job | None = None) -> dict[str, Any]:
    """Replay the archive from the newest joined pair of base backups and compare; JobFailed when the
    replay does not reproduce the newer base."""
    job = job or ctx.new_job("verify", level=LEVEL)
    with ctx.running(job):
        job.stage = "verify"
        pair = joined_pair(ctx.settings)
        if isinstance(pair, str):
            job.result = {"level": LEVEL, "ok": None, "skipped": pair}
            return job.result
        job.params["fileName"] = pair.newer
        outcome = _check(ctx, job, pair)
        ctx.catalog.patch(pair.newer, verification={**_verification(ctx, pair.newer), LEVEL: outcome})
        SliceCatalog(oplog_dir(ctx.settings)).record_verification(LEVEL, _slice_record(pair, outcome))
        job.result = {
            "fileName": pair.newer,
            "level": LEVEL,
            "ok": outcome["ok"],
            "reason": outcome["reason"],
            "verification": {LEVEL: outcome},
        }
        if not outcome["ok"]:
            raise JobFailed(
                f"pitr verification of {pair.older} -> {pair.newer} failed: {outcome['reason']}", "verify"
            )
        return job.result


def _check(ctx: JobContext, job: Job, pair: BasePair) -> dict[str, Any]:
    started = time.monotonic()
    try:
        try:
            client = drill_client(ctx)
        except JobFailed as exc:
            raise VerifyFailed(f"cannot connect to the drill server: {exc}", check=SERVER_CHECK) from None
        with client:
            check = PitrCheck(ctx.settings, client, pair, job.id, progress=job.progress, cancel=ctx.cancel)
            details = check.run()
        return record(True, None, time.monotonic() - started, **details)
    except VerifyFailed as exc:
        return record(False, exc.reason, time.monotonic() - started, **exc.as_json())


def _verification(ctx: JobContext, file_name: str) -> dict[str, Any]:
    return dict((ctx.catalog.get(file_name) or {}).get("verification") or {})


def _slice_record(pair: BasePair, outcome: dict[str, Any]) -> dict[str, Any]:
    kept = ("ok", "reason", "at", "durationSeconds", "failedCheck", "slice", "suspectSlices")
    return {**{k: outcome[k] for k in kept if k in outcome}, "older": pair.older, "newer": pair.newer}
