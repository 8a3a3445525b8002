"""The point-in-time part of a restore: plan the point, read and verify the slices, replay them.

``prepare_point`` runs before anything is written: it picks the base backup and the slices
(``pitr.plan.plan_point``), reads every slice through its ``ArchiveSource`` checking the catalog's
sha256, keeps the entries after the base's consistent point aside (``OplogSpool``), and plans the
replay over them (``plan_replay``) so that an entry the engine cannot replay refuses the restore up
front. The restore job (``service/restore.py``) then verifies the base archive, handing its own
oplog to ``feed_base`` (the entries after the dump's start: the collections were read after it),
plans the whole replay again (``replan``: the base's oplog, then the slices), restores the base
without its oplog and calls ``run``: one replay, under the restore's filters and renaming.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.raw_bson import RawBSONDocument
from pymongo.errors import PyMongoError

from sidecar.archive import DocumentChunk
from sidecar.config import Settings
from sidecar.engine.replay.archive_oplog import OplogSpool
from sidecar.engine.replay.engine import ReplayError, ReplayOptions, ReplayPlan, plan_replay, replay
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.restore_errors import error_text
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.pitr.planning.restore_point import PitrPlan, PointRefused, PointTarget, plan_point, point_text
from sidecar.pitr.record.slices import SliceError, oplog_dir, read_entries
from sidecar.progress import Progress
from sidecar.service.context import JobFailed


@dataclass
class PointReplay:
    """A planned point-in-time replay: the plan, the verified entries kept aside, what they do."""

    plan: PitrPlan
    options: ReplayOptions
    spool: OplogSpool  # the slices' entries after the base's consistent point
    planned: ReplayPlan
    base: OplogSpool = field(default_factory=OplogSpool)  # the base archive's oplog but its first entry
    base_seen: int = 0

    def feed_base(self, chunk: DocumentChunk) -> None:
        """An oplog chunk of the base archive, as the verify pass reads it."""
        for raw in chunk.documents():
            self.base_seen += 1
            if self.base_seen > 1:  # the dump noted the first before reading any collection
                self.base.add(bytes(raw))

    def entries(self) -> Iterator[bytes]:
        return itertools.chain(self.base.raw_entries(), self.spool.raw_entries())

    def replan(self) -> None:
        """The whole replay planned again, the base's oplog included (still before the first write)."""
        self.planned = plan_replay(self.entries(), self.options)
        _check_planned(self.plan, self.planned)

    @property
    def namespaces(self) -> list[str]:
        """The target namespaces the replay writes."""
        return sorted(self.planned.namespaces)

    def as_json(self) -> dict[str, Any]:
        end = self.planned.last_ts
        return {
            **self.plan.as_json(),
            "endPoint": {"t": end.time, "i": end.inc, "time": point_text(end)} if end else None,
            "planned": self.planned.as_json(),
        }

    def run(
        self, client: pymongo.MongoClient, progress: Progress, cancel: threading.Event | None
    ) -> dict[str, Any]:
        progress.begin("oplog-replay", unit="entries", total=self.planned.entries)
        try:
            result = replay(client, self.entries(), self.options, cancel=cancel, progress=progress)
        except ReplayError as exc:
            raise JobFailed(f"point-in-time replay stopped: {exc}", "restore") from None
        except PyMongoError as exc:
            message = f"point-in-time replay failed: MongoDB error: {error_text(exc)}"
            raise JobFailed(message, "restore") from None
        return result.as_json()

    def close(self) -> None:
        self.spool.close()
        self.base.close()


def prepare_point(settings: Settings, target: PointTarget, options: RestoreOptions) -> PointReplay:
    """Plan, read, verify and plan the replay; ``JobFailed`` (nothing written) when it cannot be done."""
    try:
        plan = plan_point(settings, target)
    except PointRefused as exc:
        raise JobFailed(f"{exc}; nothing was written", "restore") from exc
    replay_options = dataclasses.replace(
        plan.replay_options(ReplayScope.of(options)), writers=settings.pitr_replay_writers
    )
    spool = OplogSpool()
    try:
        _read_slices(settings, plan, spool)
        planned = plan_replay(spool.raw_entries(), replay_options)
        _check_planned(plan, planned)
    except BaseException:
        spool.close()
        raise
    return PointReplay(plan, replay_options, spool, planned)


def _read_slices(settings: Settings, plan: PitrPlan, spool: OplogSpool) -> None:
    directory = oplog_dir(settings)
    for entry in plan.slices:
        try:
            entries = read_entries(settings, directory / entry["fileName"], entry, sha256=entry["sha256"])
        except SliceError as exc:
            raise JobFailed(f"refusing to restore to a point: {exc}; nothing was written", "verify") from None
        for raw in entries:
            if RawBSONDocument(raw)["ts"] > plan.base_end:
                spool.add(raw)


def _check_planned(plan: PitrPlan, planned: ReplayPlan) -> None:
    try:
        planned.raise_if_refused()
    except ReplayError as exc:
        raise JobFailed(f"cannot replay to the point: {exc}; nothing was written", "restore") from None
    before = plan.target.before
    if before is not None and planned.stopped_at != before:
        raise JobFailed(
            f"no archived oplog entry is at {point_text(before)} (--before-op names an entry: find it "
            f"with `sidecar oplog find`); nothing was written",
            "restore",
        )
