"""The prune job: tiered retention on every destination (store/retention.py)."""

from __future__ import annotations

from sidecar.jobs import Job
from sidecar.service.context import JobContext
from sidecar.store.catalog import utc_now
from sidecar.store.retention import Removal


def run_prune(ctx: JobContext, job: Job | None = None, *, dry_run: bool = False) -> list[Removal]:
    job = job or ctx.new_job("prune", dry_run=dry_run)
    with ctx.running(job):
        removed = prune(ctx, dry_run=dry_run)
        job.result = {"dryRun": dry_run, "removed": [r.__dict__ for r in removed]}
        return removed


def plan_prune(ctx: JobContext) -> list[Removal]:
    """One Removal per copy that retention lets go."""
    return ctx.offsite.plan(ctx.catalog.load(), utc_now())


def prune(ctx: JobContext, *, dry_run: bool) -> list[Removal]:
    """Under the caller's lock: the copies retention lets go, deleted unless ``dry_run``."""
    removals = plan_prune(ctx)
    if dry_run or not removals:
        return removals
    return ctx.offsite.apply(removals)  # deletes the copies, then updates the catalog
