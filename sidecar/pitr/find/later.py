"""What a ``--drop`` restore to a point discards: the archived operations after the point on the
namespaces it replaces (counted from the slices before the first write; they stay in the archive and,
with the safety backup, in that backup).

An operation counts on a replaced namespace it acts on (a rename: either side); a ``dropDatabase`` of a
replaced namespace's database counts once, on ``db.$cmd``. Writes the archiver has not stored yet are
not in the archive and so not counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.engine.replay.units import Cut
from sidecar.pitr import optime
from sidecar.pitr.find.ops import Operation, operations
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import SliceError, iter_entries, oplog_dir
from sidecar.text import counted

LISTED = 20  # the operations a dry run lists one by one (the counts cover all)


@dataclass
class Discarded:
    point: Timestamp  # the restore's point: the operations after it are counted
    given: str  # the point as the operator gave it
    namespaces: Counter[str] = field(default_factory=Counter)
    listed: list[Operation] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # slices that could not be read: not counted

    @property
    def total(self) -> int:
        return sum(self.namespaces.values())

    def add(self, op: Operation, namespace: str) -> None:
        self.namespaces[namespace] += 1
        if len(self.listed) < LISTED:
            self.listed.append(op)

    def message(self, safety_backup: str | None, *, dry_run: bool) -> str:
        """``412 writes on maekcord.patients after 14:31:07 will be discarded; they stay in ...``."""
        on = ", ".join(
            f"{ns} ({n:,})" if len(self.namespaces) > 1 else ns for ns, n in sorted(self.namespaces.items())
        )
        kept = (
            f"the safety backup {safety_backup} and in the oplog archive"
            if safety_backup
            else "the oplog archive"
        )
        verb = "would be" if dry_run else "will be"
        least = "at least " if self.unreadable else ""
        after = self.given or optime.iso(self.point)
        return (
            f"{least}{counted(self.total, 'write')} on {on} after {after} {verb} "
            f"discarded (--drop replaces those namespaces); they stay in {kept}"
            + (f" (unreadable, not counted: {', '.join(self.unreadable)})" if self.unreadable else "")
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "after": {**optime.as_json(self.point), "time": optime.iso(self.point), "given": self.given},
            "total": self.total,
            "namespaces": dict(sorted(self.namespaces.items())),
            "operations": [op.as_json() for op in self.listed],
            "unreadableSlices": self.unreadable,
        }


def later_writes(settings: Settings, cut: Cut, given: str, replaced: Iterable[str]) -> Discarded:
    """The archived operations the cut leaves out (those after the point) on the ``replaced``
    namespaces; reads only the slices that end after the point."""
    point = cut.until if cut.until is not None else cut.before
    assert point is not None, "a point restore has a cut"
    targets = set(replaced)
    databases = {ns.partition(".")[0] for ns in targets}
    found = Discarded(point, given)
    for entry in SliceCatalog(oplog_dir(settings)).slices():
        if not cut.excludes(optime.from_json(entry["last"])):
            continue
        try:
            for raw in iter_entries(settings, oplog_dir(settings) / entry["fileName"], entry):
                doc = RawBSONDocument(raw)
                if cut.excludes(doc["ts"]):
                    _count(found, doc, targets, databases)
        except SliceError:  # the restore does not need it: said, not refused
            found.unreadable.append(entry["fileName"])
    return found


def _count(found: Discarded, doc: RawBSONDocument, targets: set[str], databases: set[str]) -> None:
    for op in operations(doc):
        hit = next((ns for ns in op.namespaces() if ns in targets), None)
        if hit is None and op.database_wide and op.database in databases:
            hit = op.namespace
        if hit is not None:
            found.add(op, hit)
