"""Retention: table-driven proof of the age, minimum-count and newest-good rules."""

from __future__ import annotations

import datetime as dt

import pytest

from sidecar import clock
from sidecar.store.retention import Policy, plan
from sidecar.text import iso_utc

NOW = dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.UTC)


def entries(*specs: tuple[int, str]) -> list[dict]:
    """(age in days, status) -> catalog entries named by their age."""
    return [
        {
            "fileName": f"b-{age}d-{status}.gz",
            "createdAt": iso_utc(NOW - dt.timedelta(days=age, minutes=1)),
            "status": status,
        }
        for age, status in specs
    ]


C, F, R = "completed", "failed", "running"


@pytest.mark.parametrize(
    ("specs", "days", "min_count", "removed"),
    [
        # plain age rule: everything past 30 days goes when enough newer good ones remain
        ([(40, C), (35, C), (5, C), (4, C), (3, C)], 30, 2, {"b-40d-completed.gz", "b-35d-completed.gz"}),
        # the minimum count keeps old good ones when there are too few newer ones
        ([(40, C), (35, C), (5, C)], 30, 3, set()),
        ([(40, C), (35, C), (5, C)], 30, 2, {"b-40d-completed.gz"}),
        # the newest good backup stays even when every backup is old and min_count is 1
        ([(90, C), (60, C)], 30, 1, {"b-90d-completed.gz"}),
        # a newer failure does not count as good: the old good ones are still protected
        ([(45, C), (40, C), (1, F), (0, F)], 30, 2, set()),
        # old failures go; recent failures stay for the record
        ([(50, F), (2, F), (1, C)], 30, 1, {"b-50d-failed.gz"}),
        # a running entry is never touched, however old
        ([(50, R), (1, C)], 30, 1, set()),
        # exactly at the limit stays (younger than cutoff by a minute in entries())
        ([(29, C), (1, C)], 30, 1, set()),
        # nothing at all
        ([], 30, 7, set()),
    ],
)
def test_plan_retention(specs, days, min_count, removed):
    removals = plan(entries(*specs), NOW, {"local": Policy(days=days, keep_last=min_count)})
    assert {r.file_name for r in removals} == removed
    for r in removals:
        assert f"older than {days} days" in r.reason


OUTCOME = {True: "passed", False: "failed", None: "untested"}


def with_results(*specs: tuple[int, bool | None]) -> list[dict]:
    """(age in days, newest integrity test passed: True, False or None for never) -> completed entries."""
    made = []
    for age, passed in specs:
        (entry,) = entries((age, C))
        entry["fileName"] = f"b-{age}d-{OUTCOME[passed]}.gz"
        if passed is not None:
            entry["lastVerification"] = {"level": "full", "ok": passed, "at": entry["createdAt"]}
        made.append(entry)
    return made


P, X, U = True, False, None  # newest integrity test passed, failed, never run


@pytest.mark.parametrize(
    ("specs", "policy", "removed"),
    [
        # issue 10 D4: seven newer archives that failed their test fill the minimum count; the newest
        # verified one is old but stays
        (
            [(40, P), (7, X), (6, X), (5, X), (4, X), (3, X), (2, X), (1, X)],
            Policy(days=30, keep_last=7),
            set(),
        ),
        # archives whose newest test failed count toward no minimum: the two untested old ones stay
        ([(50, U), (45, U), (2, X), (1, X)], Policy(days=30, keep_last=2), set()),
        # ... and past the age limit they go, while the old good one is kept by the minimum count
        ([(40, P), (38, X), (36, X)], Policy(days=30, keep_last=1), {"b-38d-failed.gz", "b-36d-failed.gz"}),
        # the newest archive that passed its test stays beyond the minimum count of untested newer ones
        ([(60, P), (50, U), (40, U)], Policy(days=30, keep_last=2), set()),
        # only the newest one that passed is protected: an older one that passed goes
        ([(70, P), (60, P), (1, U)], Policy(days=30, keep_last=1), {"b-70d-passed.gz"}),
        # the protection outlasts the maximum age, like the minimum count
        ([(100, P), (2, U)], Policy(days=30, keep_last=1, max_age_days=90), set()),
        # a failed test does not count toward a tier either: each day's good archive is kept, not it
        ([(42, U), (41, U), (40, X)], Policy(days=30, keep_last=1, daily=60), {"b-40d-failed.gz"}),
        # a young archive whose test failed stays for the record, like a failed entry
        ([(5, X), (1, P)], Policy(days=30, keep_last=1), set()),
    ],
)
@pytest.mark.parametrize("destination", ["local", "s3"])
def test_plan_retention_by_integrity_result(specs, policy, removed, destination):
    archives = with_results(*specs)
    for archive in archives:
        archive["locations"] = [destination]
    removals = plan(archives, NOW, {destination: policy})
    assert {r.file_name for r in removals} == removed
    assert all(r.destination == destination for r in removals)
    failed = {e["fileName"] for e in archives if e.get("lastVerification", {}).get("ok") is False}
    for r in removals:
        assert ("its newest integrity test failed" in r.reason) == (r.file_name in failed)


def test_prune_removes_files_and_entries_and_dry_run_keeps_them(make_settings, caplog):
    from sidecar.service import BackupService

    settings = make_settings(retention_days=30, retention_min_count=1)
    settings.backup_dir.mkdir(parents=True)
    service = BackupService(settings)
    oldest, old, new = entries((41, C), (40, C), (1, C))
    for entry in (oldest, old, new):
        (settings.backup_dir / entry["fileName"]).write_bytes(b"x")
        service.catalog.add(entry)
    gone = [oldest["fileName"], old["fileName"]]
    with clock.set_to(NOW):
        assert [r.file_name for r in service.plan_prune()] == gone
        assert all((settings.backup_dir / name).exists() for name in gone)
        with caplog.at_level("INFO", logger="sidecar.store.offsite"):
            removed = service.run_prune()
    assert [r.file_name for r in removed] == gone
    assert not any((settings.backup_dir / name).exists() for name in gone)
    assert [e["fileName"] for e in service.list_backups()] == [new["fileName"]]
    assert [r.getMessage() for r in caplog.records if r.name == "sidecar.store.offsite"] == [
        f"retention removed 2 archive copies: {gone[0]} (local), {gone[1]} (local)"
    ]


def test_safety_copies_taken_before_restores_never_count_as_the_newest_good_backups():
    """A pre-restore safety copy holds only what a restore overwrote: the age rule alone keeps it."""
    regular = entries((40, C), (35, C))
    safety = entries((2, C), (45, C))
    for entry in safety:
        entry.update(trigger="pre-restore", fileName="safety-" + entry["fileName"])
    removals = plan(regular + safety, NOW, {"local": Policy(days=30, keep_last=2)})
    assert {r.file_name for r in removals} == {"safety-b-45d-completed.gz"}


def test_metrics_and_latest_ignore_safety_copies():
    from sidecar.store.summary import summarize_catalog

    regular, safety = entries((3, C), (1, C))
    regular["sizeBytes"], safety["sizeBytes"] = 1000, 10
    safety["trigger"] = "pre-restore"
    summary = summarize_catalog([regular, safety])
    assert summary.last_size == 1000
    assert summary.archives["local"]["count"] == 2  # it still takes space on the disk


def test_a_copy_left_marked_by_an_interrupted_deletion_is_planned_again_saying_so(make_settings):
    from sidecar.service import BackupService

    settings = make_settings(retention_days=30, retention_min_count=1)
    settings.backup_dir.mkdir(parents=True)
    service = BackupService(settings)
    (kept,) = entries((1, C))  # retention keeps the archive; only its bucket copy was being removed
    service.catalog.add({**kept, "locations": ["local"], "deleting": ["s3"]})
    with clock.set_to(NOW):
        assert [(r.file_name, r.status, r.reason, r.destination) for r in service.plan_prune()] == [
            (kept["fileName"], C, "finishing a deletion that was interrupted", "s3")
        ]
