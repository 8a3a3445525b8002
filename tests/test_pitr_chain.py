"""The chain proof on hand-made catalogs: segments join by ``prev``, gaps get bounds and a cause,
windows start at the earliest base backup inside a segment and end where the segment ends."""

from __future__ import annotations

from typing import Any

from bson.timestamp import Timestamp

from sidecar.pitr.record.chain import analyse


def p(t: int, i: int = 1) -> dict[str, int]:
    return {"t": t, "i": i}


def sl(name: str, prev: dict | None, first: dict, last: dict) -> dict[str, Any]:
    return {"fileName": name, "prev": prev, "first": first, "last": last}


SLICES = [
    sl("a", p(90), p(100), p(110)),
    sl("b", p(110), p(111), p(120)),
    # the oplog rolled over while the archiver was down: recorded, and the next slice joins nothing
    sl("c", None, p(200), p(210)),
    sl("d", p(210), p(211), p(220)),
    sl("e", p(220), p(221), p(230)),
]
ROLLOVER = {"from": p(120), "to": p(200), "cause": "oplog-rollover", "detail": "rolled"}


def summary(chain) -> tuple[list, list]:
    gaps = [(g.cause, g.start and g.start.time, g.end and g.end.time, g.files) for g in chain.gaps]
    windows = [(w.start.time, w.end.time, w.backups) for w in chain.windows]
    return gaps, windows


def test_a_recorded_rollover_splits_the_chain_and_each_side_needs_its_own_base_backup() -> None:
    document = {"slices": SLICES, "gaps": [ROLLOVER]}
    backups = [("old", Timestamp(50, 1)), ("b1", Timestamp(95, 1)), ("b2", Timestamp(115, 1))]
    gaps, windows = summary(analyse(document, {}, backups))
    assert gaps == [("oplog-rollover", 120, 200, [])]
    assert windows == [(95, 120, ["b1", "b2"])]  # "old" is before the archive starts
    backups.append(("b3", Timestamp(205, 1)))  # a base backup after the gap opens a new window
    assert summary(analyse(document, {}, backups))[1] == [(95, 120, ["b1", "b2"]), (205, 230, ["b3"])]


def test_a_backup_at_the_entry_the_archive_follows_opens_a_window() -> None:
    document = {"slices": SLICES[:2], "gaps": []}
    assert summary(analyse(document, {}, [("cut", Timestamp(90, 1))]))[1] == [(90, 120, ["cut"])]
    assert summary(analyse(document, {}, [("ahead", Timestamp(121, 1))]))[1] == []  # past the archive


def test_missing_and_damaged_slices_are_gaps_between_the_good_ones() -> None:
    document = {"slices": SLICES, "gaps": [ROLLOVER]}
    problems = {"d": "slice-missing", "e": "slice-damaged: its sha256 differs"}
    gaps, windows = summary(analyse(document, problems, [("b3", Timestamp(205, 1))]))
    assert gaps == [("oplog-rollover", 120, 200, []), ("slice-missing+slice-damaged", 210, None, ["d", "e"])]
    assert windows == [(205, 210, ["b3"])]


def test_a_slice_that_does_not_follow_the_one_before_is_a_chain_break() -> None:
    document = {"slices": [SLICES[0], sl("x", p(115), p(116), p(125))], "gaps": []}
    gaps, _ = summary(analyse(document, {}, []))
    assert gaps == [("chain-break", 110, 116, [])]


def test_a_rollover_found_before_any_new_slice_is_shown() -> None:
    document = {"slices": SLICES[:2], "gaps": [ROLLOVER]}
    assert summary(analyse(document, {}, []))[0] == [("oplog-rollover", 120, 200, [])]


def test_the_newest_window_reaches_the_archivers_caught_up_position_unless_a_gap_follows_it() -> None:
    document = {"slices": SLICES, "gaps": [ROLLOVER]}
    backups = [("b1", Timestamp(95, 1)), ("b3", Timestamp(205, 1))]
    chain = analyse(document, {}, backups, caught_up=Timestamp(260, 0xFFFFFFFF))
    assert summary(chain)[1] == [(95, 120, ["b1"]), (205, 260, ["b3"])]  # only the newest segment's
    assert [w.last_entry.time for w in chain.windows] == [120, 230]
    assert [w.as_json()["caughtUp"] for w in chain.windows] == [False, True]
    behind = analyse(document, {}, backups, caught_up=Timestamp(225, 0xFFFFFFFF))
    assert summary(behind)[1][-1] == (205, 230, ["b3"])  # never short of the last entry
    damaged = analyse(document, {"e": "slice-damaged: its sha256 differs"}, backups, Timestamp(260, 0))
    assert summary(damaged)[1][-1] == (205, 220, ["b3"])  # entries after the damaged slice are lost
    pending = {"slices": SLICES, "gaps": [ROLLOVER, {**ROLLOVER, "from": p(230), "to": p(240)}]}
    assert summary(analyse(pending, {}, backups, Timestamp(260, 0)))[1][-1] == (205, 230, ["b3"])
