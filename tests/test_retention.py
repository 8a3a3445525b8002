"""Retention: table-driven proof of the age, minimum-count and newest-good rules."""

from __future__ import annotations

import datetime as dt

import pytest

from sidecar.store.catalog import iso_utc
from sidecar.store.retention import Policy, plan

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


def test_prune_removes_files_and_entries_and_dry_run_keeps_them(make_settings):
    from sidecar.service import BackupService

    settings = make_settings(retention_days=30, retention_min_count=1)
    settings.backup_dir.mkdir(parents=True)
    service = BackupService(settings)
    old, new = entries((40, C), (1, C))
    for entry in (old, new):
        (settings.backup_dir / entry["fileName"]).write_bytes(b"x")
        service.catalog.add(entry)
    # relative to the real clock these are far older; keep them relative to now
    now_old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    service.catalog.patch(old["fileName"], createdAt=iso_utc(now_old))
    service.catalog.patch(new["fileName"], createdAt=iso_utc(dt.datetime.now(dt.UTC)))
    assert [r.file_name for r in service.plan_prune()] == [old["fileName"]]
    assert (settings.backup_dir / old["fileName"]).exists()
    removed = service.run_prune()
    assert [r.file_name for r in removed] == [old["fileName"]]
    assert not (settings.backup_dir / old["fileName"]).exists()
    assert [e["fileName"] for e in service.list_backups()] == [new["fileName"]]


def test_safety_copies_taken_before_restores_never_count_as_the_newest_good_backups():
    """A pre-restore safety copy holds only what a restore overwrote: the age rule alone keeps it."""
    regular = entries((40, C), (35, C))
    safety = entries((2, C), (45, C))
    for entry in safety:
        entry.update(trigger="pre-restore", fileName="safety-" + entry["fileName"])
    removals = plan(regular + safety, NOW, {"local": Policy(days=30, keep_last=2)})
    assert {r.file_name for r in removals} == {"safety-b-45d-completed.gz"}


def test_metrics_and_latest_ignore_safety_copies():
    from sidecar.metrics import summarize_catalog

    regular, safety = entries((3, C), (1, C))
    regular["sizeBytes"], safety["sizeBytes"] = 1000, 10
    safety["trigger"] = "pre-restore"
    summary = summarize_catalog([regular, safety])
    assert summary.last_size == 1000
    assert summary.archives["local"]["count"] == 2  # it still takes space on the disk
