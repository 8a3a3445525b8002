"""``pitr.plan``: which base backup and slices a point needs, and the refusals naming the nearest
restorable points, over a chain analysed from a catalog (no server: the planning is offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bson.timestamp import Timestamp

from sidecar.pitr.planning.bases import base_backups
from sidecar.pitr.planning.restore_point import PointRefused, PointTarget, plan_point
from sidecar.pitr.record.chain import MISSING, analyse
from sidecar.store.catalog import Catalog, Status
from tests.helpers import settings_for


def _slice(first: tuple[int, int], last: tuple[int, int], prev: tuple[int, int] | None) -> dict:
    pos = lambda p: {"t": p[0], "i": p[1]}  # noqa: E731
    return {
        "fileName": f"oplog-{first[0]}.{first[1]}-{last[0]}.{last[1]}.bson.gz",
        "first": pos(first),
        "last": pos(last),
        "prev": pos(prev) if prev else None,
    }


SLICES = [
    _slice((100, 1), (110, 1), (99, 1)),
    _slice((111, 1), (120, 1), (110, 1)),
    _slice((121, 1), (130, 1), (120, 1)),  # lost in the gap case
    _slice((131, 1), (140, 1), (130, 1)),
]


@pytest.fixture
def settings(tmp_path: Path):
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path)
    catalog = Catalog(settings.backup_dir)
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    for name, start, end, status in (
        ("base-a.gz", (98, 1), (99, 1), Status.COMPLETED),
        ("base-b.gz", (112, 1), (115, 3), Status.COMPLETED),
        ("base-failed.gz", (116, 1), (117, 1), Status.FAILED),
    ):
        catalog.add(
            {
                "fileName": name,
                "status": status,
                "oplog": {"start": {"t": start[0], "i": start[1]}, "end": {"t": end[0], "i": end[1]}},
            }
        )
    return settings


def _plan(settings, target: PointTarget, lost: tuple[str, ...] = (), caught_up: Timestamp | None = None):
    chain = analyse(
        {"slices": SLICES, "gaps": []}, dict.fromkeys(lost, MISSING), base_backups(settings), caught_up
    )
    return plan_point(settings, target, chain=chain)


def test_the_newest_usable_base_at_or_before_the_point_and_the_slices_after_it(settings) -> None:
    plan = _plan(settings, PointTarget.to_time("118:0"))
    assert plan.base == "base-b.gz" and plan.base_end == Timestamp(115, 3)  # base-failed is not usable
    assert [s["first"]["t"] for s in plan.slices] == [111]
    plan = _plan(settings, PointTarget.to_time("115:3"))  # exactly its consistent point: that base
    assert plan.base == "base-b.gz" and [s["first"]["t"] for s in plan.slices] == [111]
    plan = _plan(settings, PointTarget.before_op("115:3"))  # before it: the older base
    assert plan.base == "base-a.gz" and [s["first"]["t"] for s in plan.slices] == [100, 111]
    plan = _plan(settings, PointTarget.to_time("135:0"))
    assert [s["first"]["t"] for s in plan.slices] == [111, 121, 131]
    assert plan.as_json()["target"] == {
        "until": {"t": 135, "i": 0},
        "time": "1970-01-01T00:02:15Z",
        "given": "135:0",
    }


def test_an_iso_time_takes_its_whole_second_and_needs_a_zone(settings) -> None:
    target = PointTarget.to_time("1970-01-01T00:02:15+00:00")
    assert target.until == Timestamp(135, 0xFFFFFFFF)
    assert _plan(settings, target).slices[-1]["first"]["t"] == 131
    with pytest.raises(ValueError, match="no time zone"):
        PointTarget.to_time("1970-01-01T00:02:15")
    assert PointTarget.to_time("1970-01-01T09:02:15", "Asia/Seoul").until == target.until


def test_points_outside_the_windows_or_in_a_gap_are_refused_with_the_nearest(settings) -> None:
    with pytest.raises(PointRefused) as early:
        _plan(settings, PointTarget.to_time("50:0"))
    assert early.value.nearest["after"]["t"] == 99 and early.value.nearest["before"] is None
    with pytest.raises(PointRefused) as late:
        _plan(settings, PointTarget.to_time("1970-01-01T00:02:20Z"))  # second 140 not wholly held
    assert "the latest before it is 140:1" in str(late.value)
    lost = (SLICES[2]["fileName"],)
    with pytest.raises(PointRefused) as gap:
        _plan(settings, PointTarget.to_time("125:0"), lost)
    assert gap.value.nearest["gap"]["cause"] == MISSING
    assert "the latest before it is 120:1" in str(gap.value)
    assert "earliest after" not in str(gap.value)  # no base backup after the gap: no window yet
    assert _plan(settings, PointTarget.to_time("119:0"), lost).base == "base-b.gz"


def test_a_point_up_to_the_caught_up_position_is_the_state_at_the_last_entry(settings) -> None:
    caught_up = Timestamp(150, 0xFFFFFFFF)  # the archiver, idle, had read everything until second 151
    plan = _plan(settings, PointTarget.to_time("1970-01-01T00:02:30Z"), caught_up=caught_up)
    assert plan.base == "base-b.gz" and [s["first"]["t"] for s in plan.slices] == [111, 121, 131]
    assert plan.window.end == caught_up and plan.window.last_entry == Timestamp(140, 1)
    with pytest.raises(PointRefused) as late:
        _plan(settings, PointTarget.to_time("1970-01-01T00:02:31Z"), caught_up=caught_up)
    assert "the latest before it is 150:4294967295 (1970-01-01T00:02:30Z)" in str(late.value)


def test_a_refusal_names_the_point_as_the_operator_gave_it_or_by_its_position(settings) -> None:
    target = PointTarget.before_op("50:7")
    assert target.as_json() == {"before": {"t": 50, "i": 7}, "time": "1970-01-01T00:00:50Z", "given": "50:7"}
    with pytest.raises(PointRefused) as given:
        _plan(settings, target)
    assert str(given.value) == (
        "cannot restore to 50:7: it is outside every restorable window; "
        "the earliest after it is 99:1 (1970-01-01T00:01:39Z)"
    )
    with pytest.raises(PointRefused) as built:  # a target built in code, with no text of the operator's
        _plan(settings, PointTarget(until=Timestamp(50, 7)))
    assert str(built.value).startswith("cannot restore to 50:7 (1970-01-01T00:00:50Z): it is outside")
