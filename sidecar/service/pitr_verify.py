"""The pitr verify job: the oplog archive replayed from base backup N-1 to base backup N
(``integrity/pitr.py``), on the proofs' server (``integrity/proof_server.py``).

Recorded twice: in base N's catalog entry (``verification.pitr``, read by the metrics and alerts like
every level) and beside the slices (``oplog-slices.json`` ``verification.pitr``). It never sets base
N's ``lastVerification``: a failure says the slices do not carry N-1 to N, not that N is bad, so N
stays usable (its own levels decide that). When gaps (slices missing or of another size, a break, a
rollover) lie between N-1 and N, the check fails as ``pitr-chain`` naming them, without a replay.
With fewer than two base backups within the archive, the job succeeds with ``skipped`` saying why:
nothing is recorded, no archive is blamed; the age alert (MongoBackupPitrVerifyTooOld) tells when
that lasts.
"""

from __future__ import annotations

import time
from typing import Any

from sidecar.integrity.checks import record
from sidecar.integrity.failure import VerifyFailed
from sidecar.integrity.pitr import PitrCheck
from sidecar.integrity.proof_server import proof_server, run_on
from sidecar.jobs import Job
from sidecar.pitr.planning.pair import BasePair, BrokenChain, joined_pair
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from sidecar.service.context import JobContext, JobFailed

LEVEL = "pitr"


def run_pitr_verify(ctx: JobContext, job: Job | None = None) -> dict[str, Any]:
    """Replay the archive from the newest two base backups within it and compare; JobFailed when the
    archive does not join them or the replay does not reproduce the newer base."""
    job = job or ctx.new_job("verify", level=LEVEL)
    with ctx.running(job):
        job.stage = "verify"
        pair = joined_pair(ctx.settings)
        if isinstance(pair, str):
            # no null fields: where a verdict would be (``verification.pitr``) it says skipped and why
            job.result = {"level": LEVEL, "skipped": pair, "verification": {LEVEL: {"skipped": pair}}}
            return job.result
        job.params["fileName"] = pair.newer
        outcome = _check(ctx, job, pair) if isinstance(pair, BasePair) else _broken(pair)
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
        with proof_server(ctx.settings, "pitr check", _raw_bytes(ctx, pair), job.id) as server:
            check = PitrCheck(
                ctx.settings, server.client, pair, job.id, progress=job.progress, cancel=ctx.cancel
            )
            details = run_on(server, check)
        return record(True, None, time.monotonic() - started, **details)
    except VerifyFailed as exc:
        return record(False, exc.reason, time.monotonic() - started, **exc.as_json())


def _broken(chain: BrokenChain) -> dict[str, Any]:
    return record(False, chain.reason, 0.0, **chain.as_json())


def _raw_bytes(ctx: JobContext, pair: BasePair) -> int:
    """What the check restores and replays: both bases' raw size and the slices' entries."""
    bases = [ctx.catalog.get(name) or {} for name in (pair.older, pair.newer)]
    return sum(int(b.get("uncompressedBytes") or 0) for b in bases) + sum(s["rawBytes"] for s in pair.slices)


def _verification(ctx: JobContext, file_name: str) -> dict[str, Any]:
    return dict((ctx.catalog.get(file_name) or {}).get("verification") or {})


def _slice_record(pair: BasePair | BrokenChain, outcome: dict[str, Any]) -> dict[str, Any]:
    kept = (
        *("ok", "reason", "at", "durationSeconds", "failedCheck", "slice", "suspectSlices", "brokenSlices"),
        *("server", "writtenBytes"),
    )
    return {**{k: outcome[k] for k in kept if k in outcome}, "older": pair.older, "newer": pair.newer}
