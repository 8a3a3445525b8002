"""Retention of oplog slices: which copies go, per destination. Pure: the slice catalog's document,
the backup catalog, a clock and the policies in, Removals (``kind="slice"``) out.

A destination (``local``, ``s3``) keeps, among the slices it holds, those its *retained base backups*
need: the usable full backups with a recorded oplog cut that its archive policy (store/retention.py,
tiers included) keeps. Base ``b`` needs

- the slices that overlap its own oplog cut (``oplog.start`` .. ``oplog.end``): a backup that took its
  consistent cut from the archive is restored with them;
- its window: the slices after its consistent point (``oplog.end``) up to the next retained base's
  (for the newest base: every slice after it).

``SIDECAR_PITR_RETENTION_DAYS`` (0 = off) shortens the point-in-time window: a base's window is kept
only when it reaches into the last N days (the next base's consistent point is newer than that). So
the archive reaches back to the consistent point of the oldest base whose window is kept. With no
retained base at all every slice is kept, and the newest slice always is (the archiver resumes after
it). As for archives, a slice's last copy is not removed while another destination wants it but lacks
it (its upload is pending).
"""

from __future__ import annotations

import bisect
import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from sidecar.pitr import optime
from sidecar.pitr.record.slices import SliceEntry
from sidecar.store.catalog import Entry, Status, is_usable
from sidecar.store.retention import Policy, Removal, keep_reasons, locations

SLICE = "slice"


@dataclass(frozen=True)
class Base:
    name: str
    start: Timestamp | None  # the first entry of its oplog cut, when recorded
    end: Timestamp  # its consistent point


def retained_bases(
    entries: list[Entry], now: dt.datetime, policy: Policy, tz: dt.tzinfo | str = dt.UTC
) -> list[Base]:
    """The base backups ``policy`` keeps (wherever their copies are now), oldest consistent point first."""
    if isinstance(tz, str):
        tz = zoneinfo.ZoneInfo(tz)
    archives = [e for e in entries if e.get("status") == Status.COMPLETED]
    kept = keep_reasons(archives, now, policy, tz)
    bases = []
    for entry in archives:
        cut = entry.get("oplog") or {}
        if entry["fileName"] in kept and is_usable(entry) and cut.get("end"):
            start = optime.from_json(cut["start"]) if cut.get("start") else None
            bases.append(Base(entry["fileName"], start, optime.from_json(cut["end"])))
    return sorted(bases, key=lambda b: b.end)


def needed(
    slices: list[SliceEntry], bases: list[Base], now: dt.datetime, pitr_days: int = 0
) -> dict[str, str]:
    """Slice file name -> why the destination whose retained bases are ``bases`` keeps it."""
    if not slices:
        return {}
    if not bases:
        return {s["fileName"]: "no retained base backup yet" for s in slices}
    cutoff = (now - dt.timedelta(days=pitr_days)).timestamp() if pitr_days else None
    kept: dict[str, str] = {slices[-1]["fileName"]: "the newest slice (the archiver resumes after it)"}
    names = [s["fileName"] for s in slices]
    firsts = [optime.from_json(s["first"]) for s in slices]  # both increase along the chain
    lasts = [optime.from_json(s["last"]) for s in slices]
    for index, base in enumerate(bases):
        following = bases[index + 1].end if index + 1 < len(bases) else None
        if base.start is not None:  # slices with last >= start and first <= end
            cut = names[bisect.bisect_left(lasts, base.start) : bisect.bisect_right(firsts, base.end)]
            for name in cut:
                kept.setdefault(name, f"holds the oplog cut of {base.name}")
        if cutoff is None or following is None or following.time >= cutoff:  # last > end, first <= next
            upto = len(names) if following is None else bisect.bisect_right(firsts, following)
            for name in names[bisect.bisect_right(lasts, base.end) : upto]:
                kept.setdefault(name, f"in the point-in-time window of {base.name}")
    return kept


def plan_slices(
    document: dict[str, Any],
    keep: Mapping[str, dict[str, str]],
    bases: Mapping[str, list[Base]],
) -> list[Removal]:
    """The slice copies to remove (``keep``: destination -> ``needed()``; ``bases``: for the reasons)."""
    removals: list[Removal] = []
    for entry in document["slices"]:
        name, where = entry["fileName"], locations(entry)
        drop = [d for d in where if d in keep and name not in keep[d]]
        remaining = [d for d in where if d not in drop]
        pending = [d for d in keep if d not in where and name in keep[d]]
        if drop and not remaining and pending:
            drop, remaining = [], where  # the last copy, wanted where it is not yet
        for d in drop:
            removals.append(Removal(name, SLICE, entry["createdAt"], _why(entry, bases.get(d, [])), d, SLICE))
    for name, destinations in (document.get("deleting") or {}).items():
        for d in destinations:
            why = "finishing a deletion that was interrupted"
            removals.append(Removal(name, SLICE, "", why, d, SLICE))
    return removals


def oldest_left(document: dict[str, Any], going: Mapping[str, list[str]]) -> Timestamp | None:
    """The first entry of the oldest slice that keeps a copy once ``going`` is removed: recorded gaps
    that end at or before it fall before the archive and go with the slices."""
    for entry in document["slices"]:
        if set(locations(entry)) - set(going.get(entry["fileName"], [])):
            return optime.from_json(entry["first"])
    return None


def _why(entry: SliceEntry, bases: list[Base]) -> str:
    if bases and optime.from_json(entry["last"]) <= bases[0].end:
        oldest = bases[0]
        point = optime.iso(oldest.end)
        return f"before the window of the oldest retained base backup {oldest.name} ({point})"
    return "in no kept point-in-time window (SIDECAR_PITR_RETENTION_DAYS) and no retained backup's cut"
