"""Which two base backups the oplog archive joins: the pair the ``pitr`` integrity level replays.

The two newest usable base backups N-1 and N (``bases.base_backups``) whose consistent points lie in
one segment of good slices (``chain``): base N-1 plus the slices after its consistent point, replayed
through N's, must give what base N gives. When there is no such pair the answer is why not.
"""

from __future__ import annotations

from dataclasses import dataclass

from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.pitr.planning.bases import base_backups
from sidecar.pitr.record.slices import SliceEntry
from sidecar.pitr.status import chain_of


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


def joined_pair(settings: Settings) -> BasePair | str:
    """The newest pair of base backups one segment joins, or the reason there is none."""
    bases = base_backups(settings)
    if len(bases) < 2:
        found = f"only {bases[0][0]}" if bases else "none"
        return (
            f"the pitr check needs two usable base backups with an oplog cut (dumped with the oplog on "
            f"a replica set), and the catalog holds {found}"
        )
    _, chain = chain_of(settings)
    points = dict(bases)
    for segment in reversed(chain.segments):
        inside = sorted((points[n], n) for n in points if segment.covers(points[n]))
        if len(inside) < 2:
            continue
        (older_point, older), (newer_point, newer) = inside[-2:]
        slices = [
            s
            for s in segment.slices
            if optime.from_json(s["last"]) > older_point and optime.from_json(s["first"]) <= newer_point
        ]
        return BasePair(older, newer, older_point, newer_point, slices)
    return (
        f"no two of the {len(bases)} usable base backups lie in one unbroken stretch of the oplog "
        f"archive (see sidecar pitr status: its windows and gaps)"
    )
