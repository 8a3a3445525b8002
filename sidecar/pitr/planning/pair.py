"""Which two base backups the oplog archive joins: the pair the ``pitr`` integrity level replays.

The two newest usable base backups N-1 and N (``bases.base_backups``) whose consistent points lie
within the archive (from the entry its first slice follows to its newest entry): base N-1 plus the
slices after its consistent point, replayed through N's, must give what base N gives. When one
segment of good slices (``chain``) holds both, that is a ``BasePair``; when gaps (slices missing or
damaged, a break, a rollover) lie between them, a ``BrokenChain`` that names them: the check fails.
Only when fewer than two base backups lie within the archive is there no pair: the answer is why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.pitr.planning.bases import base_backups
from sidecar.pitr.record.chain import Gap, Segment
from sidecar.pitr.record.slices import SliceEntry
from sidecar.pitr.status import chain_of

BROKEN_CHAIN = "pitr-chain"


@dataclass(frozen=True)
class BasePair:
    older: str  # base backup N-1 (file name)
    newer: str  # base backup N
    older_point: Timestamp  # N-1's consistent point: the replay takes every entry after it ...
    newer_point: Timestamp  # ... through this one (inclusive)
    slices: list[SliceEntry]  # the slices holding those entries, in chain order

    def as_json(self) -> dict[str, object]:
        return {
            "older": self.older,
            "newer": self.newer,
            "from": optime.as_json(self.older_point),
            "through": optime.as_json(self.newer_point),
            "fromTime": optime.iso(self.older_point),
            "throughTime": optime.iso(self.newer_point),
            "slices": [s["fileName"] for s in self.slices],
        }


@dataclass(frozen=True)
class BrokenChain:
    """Base backups N-1 and N lie within the archive, but gaps between them: N-1 cannot be carried to N."""

    older: str
    newer: str
    gaps: list[Gap]

    @property
    def files(self) -> list[str]:
        """The missing or damaged slices between the two, in chain order."""
        return [name for gap in self.gaps for name in gap.files]

    @property
    def reason(self) -> str:
        gaps = "; ".join(_gap_text(gap) for gap in self.gaps) or "no segment of good slices holds both"
        return f"the oplog archive does not join base backup {self.older} to {self.newer}: {gaps}"

    def as_json(self) -> dict[str, Any]:
        """The failure's fields for ``checks.record``: which check, which slice, every gap."""
        return {
            "failedCheck": BROKEN_CHAIN,
            "slice": self.files[0] if self.files else None,
            "brokenSlices": self.files or None,
            "gaps": [gap.as_json() for gap in self.gaps],
        }


def _gap_text(gap: Gap) -> str:
    if gap.files:  # the detail names each slice and what is wrong with it
        return gap.detail
    start = optime.iso(gap.start) if gap.start else "the archive's start"
    end = optime.iso(gap.end) if gap.end else "its newest entry"
    return f"{gap.cause} from {start} to {end} ({gap.detail})"


def _span(slices: list[SliceEntry]) -> tuple[Timestamp, Timestamp] | None:
    """From the entry the archive's first slice follows to its newest entry, damaged slices included."""
    if not slices:
        return None
    return Segment(slices[:1]).after, optime.from_json(slices[-1]["last"])


def joined_pair(settings: Settings) -> BasePair | BrokenChain | str:
    """The newest two base backups within the archive: joined, broken apart, or the reason there are
    not two."""
    bases = base_backups(settings)
    if len(bases) < 2:
        found = f"only {bases[0][0]}" if bases else "none"
        return (
            f"the pitr check needs two usable base backups with an oplog cut (dumped with the oplog on "
            f"a replica set), and the catalog holds {found}"
        )
    document, chain = chain_of(settings)
    span = _span(document["slices"])
    inside = sorted((p, n) for n, p in bases if span is not None and span[0] <= p <= span[1])
    if len(inside) < 2:
        where = "holds no slices" if span is None else f"spans {optime.iso(span[0])} to {optime.iso(span[1])}"
        return (
            f"the pitr check needs two usable base backups within the oplog archive, which {where}: "
            f"{len(inside)} of the {len(bases)} lie in it"
        )
    (older_point, older), (newer_point, newer) = inside[-2:]
    for segment in chain.segments:
        if segment.covers(older_point) and segment.covers(newer_point):
            slices = [
                s
                for s in segment.slices
                if optime.from_json(s["last"]) > older_point and optime.from_json(s["first"]) <= newer_point
            ]
            return BasePair(older, newer, older_point, newer_point, slices)
    return BrokenChain(older, newer, [g for g in chain.gaps if lies_between(g, older_point, newer_point)])


def lies_between(gap: Gap, older: Timestamp, newer: Timestamp) -> bool:
    """The gap takes away entries after ``older`` and up to ``newer``."""
    return (gap.start is None or gap.start < newer) and (gap.end is None or gap.end > older)
