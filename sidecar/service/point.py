"""The point-in-time part of a restore: plan the point, read and verify the slices, replay them.

``prepare_point`` runs before anything is written: it picks the base backup and the slices
(``planning.restore_point.plan_point``), builds the replay's input (``planning.point_input.PointInput``,
the same builder the ``pitr`` check uses: every slice read and checked against the catalog, its
entries after the base's consistent point kept aside) and plans the replay over them, so that an
entry the engine cannot replay refuses the restore up front. The restore job (``service/restore.py``)
then verifies the base archive, handing its own oplog to ``feed_base``, plans the whole replay again
(``replan``: the base's oplog, then the slices), restores the base without its oplog and calls
``run``: one replay, under the restore's filters and renaming.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo.errors import PyMongoError

from sidecar.archive import DocumentChunk
from sidecar.config import Settings
from sidecar.engine.replay.engine import ReplayError, ReplayOptions, ReplayPlan
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.restore_errors import error_text
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.pitr.planning.point_input import PointInput, UnverifiedSlice
from sidecar.pitr.planning.restore_point import PitrPlan, PointRefused, PointTarget, plan_point, point_text
from sidecar.progress import Progress
from sidecar.service.context import JobFailed


@dataclass
class PointReplay:
    """A planned point-in-time replay: the plan, its input (verified, kept aside), what it does."""

    plan: PitrPlan
    options: ReplayOptions
    source: PointInput
    planned: ReplayPlan

    def feed_base(self, chunk: DocumentChunk) -> None:
        """An oplog chunk of the base archive, as the verify pass reads it."""
        self.source.feed_base(chunk)

    def replan(self) -> None:
        """The whole replay planned again, the base's oplog included (still before the first write)."""
        self.planned = self.source.plan(self.options)
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
            result = self.source.replay(client, self.options, cancel=cancel, progress=progress)
        except ReplayError as exc:
            raise JobFailed(f"point-in-time replay stopped: {exc}", "restore") from None
        except PyMongoError as exc:
            message = f"point-in-time replay failed: MongoDB error: {error_text(exc)}"
            raise JobFailed(message, "restore") from None
        return result.as_json()

    def close(self) -> None:
        self.source.close()


def prepare_point(settings: Settings, target: PointTarget, options: RestoreOptions) -> PointReplay:
    """Plan, read, verify and plan the replay; ``JobFailed`` (nothing written) when it cannot be done."""
    try:
        plan = plan_point(settings, target)
    except PointRefused as exc:
        raise JobFailed(f"{exc}; nothing was written", "restore") from exc
    source = PointInput(settings, plan.base_end, plan.slices)
    replay_options = source.options(until=target.until, before=target.before, scope=ReplayScope.of(options))
    try:
        source.read_slices()
        planned = source.plan(replay_options)
        _check_planned(plan, planned)
    except UnverifiedSlice as exc:
        source.close()
        raise JobFailed(f"refusing to restore to a point: {exc}; nothing was written", "verify") from None
    except BaseException:
        source.close()
        raise
    return PointReplay(plan, replay_options, source, planned)


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
