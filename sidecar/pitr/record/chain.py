"""The chain proof, offline: do the slices join, where are the gaps, which stretches are restorable.

Pure: it reads the slice catalog's document, the findings of a file check (which slices are missing
or damaged) and the base backups' consistent points. A *segment* is a run of good slices where each
one's ``prev`` is the previous one's ``last``; it holds every oplog entry after the first slice's
``prev`` (or from its first entry, when it joins nothing) up to its last entry. Between segments is a
*gap*. A *window* is the stretch from the earliest base backup whose consistent point (its oplog end)
lies in a segment to that segment's end: every point in it is a base backup plus a replay. The newest
segment's window, when no gap follows it, reaches on to the archiver's caught-up position (every entry
up to it is stored): a point between the last entry and it is the state at the last entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson.timestamp import Timestamp

from sidecar.pitr import optime
from sidecar.pitr.record.slices import SliceEntry

MISSING, DAMAGED = "slice-missing", "slice-damaged"
ROLLOVER, BREAK = "oplog-rollover", "chain-break"


def _pos(data: dict[str, Any] | None) -> Timestamp | None:
    return optime.from_json(data) if data else None


@dataclass
class Segment:
    slices: list[SliceEntry]

    @property
    def after(self) -> Timestamp:
        """Every entry after this point (or from it, when the first slice joins nothing) is held."""
        return _pos(self.slices[0]["prev"]) or optime.from_json(self.slices[0]["first"])

    @property
    def last(self) -> Timestamp:
        return optime.from_json(self.slices[-1]["last"])

    def covers(self, point: Timestamp) -> bool:
        return self.after <= point <= self.last


@dataclass
class Gap:
    start: Timestamp | None  # the last entry stored before it (None: before the first slice)
    end: Timestamp | None  # the first entry stored after it (None: nothing stored after it yet)
    cause: str
    files: list[str] = field(default_factory=list)
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "from": optime.as_json(self.start) if self.start else None,
            "to": optime.as_json(self.end) if self.end else None,
            "fromTime": optime.iso(self.start) if self.start else None,
            "toTime": optime.iso(self.end) if self.end else None,
            "cause": self.cause,
            "files": self.files,
            "detail": self.detail,
        }


@dataclass
class Window:
    start: Timestamp
    end: Timestamp  # the newest restorable point: its last entry, or the archiver's caught-up position
    backups: list[str]  # the base backups whose consistent point lies in it, oldest first
    last_entry: Timestamp  # the segment's newest entry: a restore to a point after it stops there

    def as_json(self) -> dict[str, Any]:
        return {
            "start": optime.as_json(self.start),
            "end": optime.as_json(self.end),
            "startTime": optime.iso(self.start),
            "endTime": optime.iso(self.end),
            "seconds": self.end.time - self.start.time,
            "lastEntry": optime.as_json(self.last_entry),
            "lastEntryTime": optime.iso(self.last_entry),
            "caughtUp": self.end > self.last_entry,  # the end is the archiver's caught-up position
            "baseBackup": self.backups[0],
            "backups": self.backups,
        }


@dataclass
class Chain:
    segments: list[Segment]
    gaps: list[Gap]
    windows: list[Window]


def _bad_cause(names: list[str], problems: dict[str, str]) -> tuple[str, str]:
    causes = {DAMAGED if problems[n] != MISSING else MISSING for n in names}
    cause = causes.pop() if len(causes) == 1 else f"{MISSING}+{DAMAGED}"
    return cause, "; ".join(f"{n}: {problems[n]}" for n in names)


def _segments(
    slices: list[SliceEntry], problems: dict[str, str], recorded: list[dict[str, Any]]
) -> tuple[list[Segment], list[Gap]]:
    segments: list[Segment] = []
    gaps: list[Gap] = []
    bad: list[SliceEntry] = []
    rollovers = {(g["to"]["t"], g["to"]["i"]): g for g in recorded if g.get("to")}
    for entry in slices:
        if entry["fileName"] in problems:
            bad.append(entry)
            continue
        current = segments[-1] if segments else None
        joins = current is not None and not bad and _pos(entry["prev"]) == current.last
        if joins:
            current.slices.append(entry)  # type: ignore[union-attr]
            continue
        start = current.last if current else (_pos(bad[0]["prev"]) if bad else None)
        first = optime.from_json(entry["first"])
        if bad:
            cause, detail = _bad_cause([b["fileName"] for b in bad], problems)
            gaps.append(Gap(start, first, cause, [b["fileName"] for b in bad], detail))
        elif current is not None:  # the oldest slice starts the archive, whatever it follows
            known = rollovers.pop((first.time, first.inc), None)
            cause = known["cause"] if known else BREAK
            detail = known.get("detail", "") if known else "this slice does not follow the one before it"
            gaps.append(Gap(start or _pos(entry["prev"]), first, cause, [], detail))
        bad = []
        segments.append(Segment([entry]))
    if bad:
        cause, detail = _bad_cause([b["fileName"] for b in bad], problems)
        start = segments[-1].last if segments else _pos(bad[0]["prev"])
        gaps.append(Gap(start, None, cause, [b["fileName"] for b in bad], detail))
    for pending in rollovers.values():  # found on resume, no slice after it yet
        gaps.append(Gap(_pos(pending["from"]), _pos(pending["to"]), pending["cause"], [], pending["detail"]))
    return segments, gaps


def analyse(
    document: dict[str, Any],
    problems: dict[str, str],
    backups: list[tuple[str, Timestamp]],
    caught_up: Timestamp | None = None,
) -> Chain:
    """``problems``: slice file name -> ``slice-missing`` or what is damaged; ``backups``: (name,
    consistent point) of the usable base backups, oldest first; ``caught_up``: the archiver's recorded
    position up to which every entry is stored (or lost in a recorded gap)."""
    segments, gaps = _segments(document["slices"], problems, document.get("gaps", []))
    windows = []
    for segment in segments:
        inside = sorted(((p, n) for n, p in backups if segment.covers(p)), key=lambda b: b[0])
        if inside:
            end = segment.last
            if caught_up is not None and segment is segments[-1] and not _gap_after(gaps, end):
                end = max(end, caught_up)
            windows.append(Window(inside[0][0], end, [n for _, n in inside], segment.last))
    gaps.sort(key=lambda g: g.start or g.end or Timestamp(0, 0))
    return Chain(segments, gaps, windows)


def _gap_after(gaps: list[Gap], last: Timestamp) -> bool:
    """A gap begins at or after the newest segment's end (damaged newest slices, a rollover found on
    resume): entries after it are lost, whatever the archiver caught up to since."""
    return any(g.start is not None and g.start >= last for g in gaps)
