"""The pair check's judgement of a gap, without a server: which gaps break base N-1's way to base N,
and how a gap without slice files is worded (a break, a rollover: ends the archive does not know)."""

from __future__ import annotations

import pytest
from bson.timestamp import Timestamp

from sidecar.pitr.planning.pair import BrokenChain, lies_between
from sidecar.pitr.record.chain import Gap

OLDER, NEWER = Timestamp(1000, 1), Timestamp(2000, 1)  # the replay needs the entries in (OLDER, NEWER]


@pytest.mark.parametrize(
    ("start", "end", "between"),
    [
        (Timestamp(1500, 1), Timestamp(1600, 1), True),  # inside
        (Timestamp(500, 1), Timestamp(1500, 1), True),  # runs into the stretch from before it
        (Timestamp(1500, 1), Timestamp(2500, 1), True),  # runs out of it: NEWER itself is missing
        (None, Timestamp(1500, 1), True),  # from before the first slice into the stretch
        (Timestamp(1500, 1), None, True),  # nothing stored after it yet
        (None, None, True),
        (Timestamp(500, 1), OLDER, False),  # ends at OLDER: only entries before it are missing
        (NEWER, Timestamp(2500, 1), False),  # starts at NEWER: only entries after it are missing
        (Timestamp(2500, 1), None, False),  # after the stretch, open-ended
        (None, Timestamp(900, 1), False),  # before the stretch, from the archive's start
    ],
)
def test_a_gap_breaks_the_pair_only_where_it_takes_entries_the_replay_needs(start, end, between) -> None:
    assert lies_between(Gap(start, end, "break"), OLDER, NEWER) is between


def test_a_gap_without_slice_files_names_the_ends_it_knows() -> None:
    gaps = [
        Gap(None, Timestamp(1500, 0), "break", detail="the archiver started late"),
        Gap(Timestamp(1600, 0), None, "oplog-rollover", detail="entries fell off the server's oplog"),
    ]
    reason = BrokenChain("a.gz", "b.gz", gaps).reason
    assert reason == (
        "the oplog archive does not join base backup a.gz to b.gz: "
        "break from the archive's start to 1970-01-01T00:25:00Z (the archiver started late); "
        "oplog-rollover from 1970-01-01T00:26:40Z to its newest entry (entries fell off the server's oplog)"
    )
