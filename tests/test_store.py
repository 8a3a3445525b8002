"""The store's data-safety rules: writes atomic (temp name, fsync, rename), deletions catalog first,
and a pinned source that serves the bytes of its first read to every later one."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest

from sidecar.service import BackupService
from sidecar.store.catalog import iso_utc


class Crash(BaseException):
    """The process dies here (nothing catches it)."""


def completed_without_file(service: BackupService) -> list[str]:
    return [
        e["fileName"]
        for e in service.list_backups()
        if e.get("status") == "completed"
        and "local" in (e.get("locations") or ["local"])
        and not (service.settings.backup_dir / e["fileName"]).exists()
    ]


def test_a_crash_during_pruning_leaves_no_completed_entry_without_its_file(make_settings, monkeypatch):
    settings = make_settings(retention_days=30, retention_min_count=1)
    settings.backup_dir.mkdir(parents=True)
    service = BackupService(settings)
    now = dt.datetime.now(dt.UTC)
    for age in (50, 40, 0):
        name = f"maekcord-backup-{now - dt.timedelta(days=age):%Y-%m-%dT%H-%M-%S}.gz"
        (settings.backup_dir / name).write_bytes(b"x")
        service.catalog.add(
            {"fileName": name, "status": "completed", "createdAt": iso_utc(now - dt.timedelta(days=age))}
        )
    real_unlink = pathlib.Path.unlink

    def unlink_then_crash(self, missing_ok=False):
        real_unlink(self, missing_ok=missing_ok)
        if self.name.endswith(".gz"):
            raise Crash()  # the first archive file is gone, the process with it

    monkeypatch.setattr(pathlib.Path, "unlink", unlink_then_crash)
    with pytest.raises(Crash):
        service.run_prune()
    monkeypatch.undo()
    assert completed_without_file(service) == []
    # the next prune finishes the interrupted deletion: both old archives and their entries go
    BackupService(settings).run_prune()
    assert [e["status"] for e in service.list_backups()] == ["completed"]
    assert sorted(p.name for p in settings.backup_dir.glob("*.gz")) == [service.list_backups()[0]["fileName"]]
