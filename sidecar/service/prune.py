"""The prune job: tiered retention on every destination (store/retention.py) for archives, and the
oplog slices' retention (pitr/record/retention.py) after them; pending slice uploads are made first."""

from __future__ import annotations

from collections.abc import Callable

from sidecar import clock
from sidecar.jobs import Job
from sidecar.pitr.record.offsite import SliceCopies
from sidecar.pitr.record.retention import SLICE
from sidecar.service.context import JobContext
from sidecar.store.retention import Removal


def run_prune(ctx: JobContext, job: Job | None = None, *, dry_run: bool = False) -> list[Removal]:
    job = job or ctx.new_job("prune", dry_run=dry_run)
    with ctx.running(job):
        result: dict = {}
        removed = prune(ctx, dry_run=dry_run, result=result)
        job.result = {"dryRun": dry_run, "removed": [r.__dict__ for r in removed], **result}
        return removed


def plan_prune(ctx: JobContext) -> list[Removal]:
    """One Removal per copy that retention lets go: archives, then oplog slices (``kind``)."""
    entries, now = ctx.catalog.load(), clock.now()
    return ctx.offsite.plan(entries, now) + SliceCopies(ctx.settings).plan(entries, now)


def prune(
    ctx: JobContext,
    *,
    dry_run: bool,
    result: dict | None = None,
    between: Callable[[], None] | None = None,
) -> list[Removal]:
    """Under the caller's lock: the copies retention lets go, deleted unless ``dry_run``. Slice
    uploads the bucket lacks are made first (``result["uploads"]["slices"]``); ``between``: see
    SliceCopies.apply."""
    slices = SliceCopies(ctx.settings)
    if not dry_run and ctx.settings.s3_bucket:
        uploaded = slices.upload(ctx.catalog.load(), clock.now())
        if result is not None:
            result.setdefault("uploads", {})["slices"] = uploaded
    removals = plan_prune(ctx)
    if dry_run or not removals:
        return removals
    archives = [r for r in removals if r.kind != SLICE]
    done = ctx.offsite.apply(archives) if archives else []  # deletes the copies, then updates the catalog
    return done + slices.apply([r for r in removals if r.kind == SLICE], between)
