"""Planning a point-in-time restore: which base backup, which slices, where the replay stops.

The shared entry point for ``restore --to-time/--before-op``, ``oplog find`` (to name the restorable
points around a hit) and the ``pitr`` integrity level::

    target = PointTarget.to_time("2026-12-02T14:31:06+09:00")   # "now-5m", "1733011200:5": time_input
    target = PointTarget.before_op("1733011267:3")
    plan = plan_point(settings, target)      # PointRefused (a ValueError) with the nearest points
    plan.base, plan.base_end, plan.slices, plan.target.until/.before, plan.as_json()
    nearest_points(chain, ts)                # the window bounds around a position, and its gap

The restore and the ``pitr`` check read what the plan names through one input builder
(``point_input.PointInput``: the base archive's own oplog, then the slices' entries after
``plan.base_end``, each slice verified) and plan it with the replay engine's one planner.

A point is restorable when it lies in a *window* of the chain (``chain.Window``): a run of joined,
undamaged slices holding a usable base backup's consistent point at or before it, up to its last
entry or, for the newest, on to the archiver's recorded caught-up position (a point after the last
entry restores the state at the last entry: nothing was written in between). ``--to-time T``
replays every entry with ``ts <= T`` (a time given in seconds takes its whole final second:
``through_second``); ``--before-op t:i`` every entry before that one. The base is the newest one
whose consistent point is at or before the point (strictly before, for ``before``). Its collections
were read after its oplog ``start``: the restore replays the archive's own oplog (every entry after
``start``, through its consistent point ``end``) and then the slices' entries after ``end``, under
the restore's namespace filters and renaming, as one replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from sidecar import time_input
from sidecar.config import Settings
from sidecar.engine.replay.engine import through_second
from sidecar.pitr import optime
from sidecar.pitr.planning.bases import base_ranges
from sidecar.pitr.record.chain import Chain, Gap, Segment, Window
from sidecar.pitr.record.slices import SliceEntry
from sidecar.pitr.status import chain_of


def point_text(ts: Timestamp) -> str:
    """``t:i (ISO second)``, as the messages name a position."""
    return f"{ts.time}:{ts.inc} ({optime.iso(ts)})"


@dataclass(frozen=True)
class PointTarget:
    """Where a restore stops: every entry with ``ts <= until``, or every entry before ``before``."""

    until: Timestamp | None = None
    before: Timestamp | None = None
    text: str = ""  # as the operator gave it

    @classmethod
    def to_time(cls, text: str, tz: str | None = None) -> PointTarget:
        """``t:i`` (through that entry), or a time (``time_input``: every entry of its second and
        before); ``tz`` reads a time without a zone. TimeInputError (a ValueError) when neither."""
        point = time_input.parse_point(text, tz)
        until = point if isinstance(point, Timestamp) else through_second(int(point.timestamp()))
        return cls(until=until, text=text)

    @classmethod
    def before_op(cls, text: str) -> PointTarget:
        return cls(before=time_input.parse_position(text), text=text)

    @property
    def point(self) -> Timestamp:
        point = self.until if self.until is not None else self.before
        assert point is not None, "a target has until or before"
        return point

    def holds(self, base_end: Timestamp) -> bool:
        """A base at this consistent point can be carried to the target."""
        return base_end <= self.until if self.until is not None else base_end < self.point

    def as_json(self) -> dict[str, Any]:
        kind = "until" if self.until is not None else "before"
        return {kind: optime.as_json(self.point), "time": optime.iso(self.point), "given": self.text}


class PointRefused(ValueError):
    """The point is in no window; ``nearest`` names the restorable points before and after it."""

    def __init__(self, message: str, nearest: dict[str, Any]):
        super().__init__(message)
        self.nearest = nearest


@dataclass
class PitrPlan:
    target: PointTarget
    base: str  # the base backup's file name
    base_end: Timestamp  # its consistent point: the slices' entries after it are replayed
    slices: list[SliceEntry]
    window: Window

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target.as_json(),
            "baseBackup": self.base,
            "baseConsistentPoint": optime.as_json(self.base_end),
            "slices": [s["fileName"] for s in self.slices],
            "window": self.window.as_json(),
        }


def plan_point(settings: Settings, target: PointTarget, chain: Chain | None = None) -> PitrPlan:
    """The base backup, slices and cut that restore ``target``; ``PointRefused`` when none can.
    ``chain`` defaults to the archive's as ``pitr status`` sees it (slice sizes checked; the
    sha256 of each slice is checked when the restore reads it)."""
    chain = chain if chain is not None else chain_of(settings)[1]
    ranges = {name: (start, end) for name, start, end in base_ranges(settings)}
    point = target.point
    for window, segment in _windows(chain):
        if not window.start <= point <= window.end:
            continue
        usable = [n for n in window.backups if n in ranges and target.holds(ranges[n][1])]
        if not usable:
            continue
        name = max(usable, key=lambda n: ranges[n][1])
        end = ranges[name][1]
        slices = [
            s
            for s in segment.slices
            if optime.from_json(s["last"]) > end and optime.from_json(s["first"]) <= point
        ]
        return PitrPlan(target, name, end, slices, window)
    raise refusal(chain, target)


def _windows(chain: Chain) -> list[tuple[Window, Segment]]:
    by_end = {segment.last: segment for segment in chain.segments}
    return [(w, by_end[w.last_entry]) for w in chain.windows if w.last_entry in by_end]


def nearest_points(chain: Chain, point: Timestamp) -> dict[str, Any]:
    """The restorable points around ``point``: the end of the window before it, the start of the
    window after it, and the gap it falls in (each None when there is none)."""
    before = [w for w in chain.windows if w.end < point]
    after = [w for w in chain.windows if w.start > point]
    gap = next((g for g in chain.gaps if _in_gap(g, point)), None)
    return {
        "before": _bound(max(before, key=lambda w: w.end).end) if before else None,
        "after": _bound(min(after, key=lambda w: w.start).start) if after else None,
        "gap": gap.as_json() if gap is not None else None,
    }


def _in_gap(gap: Gap, point: Timestamp) -> bool:
    return (gap.start is None or gap.start < point) and (gap.end is None or point < gap.end)


def _bound(ts: Timestamp) -> dict[str, Any]:
    return {**optime.as_json(ts), "time": optime.iso(ts)}


def refusal(chain: Chain, target: PointTarget) -> PointRefused:
    """Why ``target`` cannot be restored, naming the nearest restorable points."""
    nearest = nearest_points(chain, target.point)
    where = f"{target.text or point_text(target.point)}"
    if nearest["gap"] is not None:
        gap = nearest["gap"]
        span = f"from {gap['fromTime'] or 'the start'} to {gap['toTime'] or 'now'}"
        reason = f"it falls in a gap of the oplog archive ({gap['cause']}, {span})"
    elif not chain.windows:
        reason = "no base backup's consistent point lies in the archived oplog (no restorable window)"
    else:
        reason = "it is outside every restorable window"
    labels = (("the latest before it is", nearest["before"]), ("the earliest after it is", nearest["after"]))
    options = [f"{label} {b['t']}:{b['i']} ({b['time']})" for label, b in labels if b is not None]
    named = "; ".join(options) if options else "there is no restorable point yet"
    return PointRefused(f"cannot restore to {where}: {reason}; {named}", nearest)
