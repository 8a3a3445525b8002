"""The store's data-safety rules: writes atomic (temp name, fsync, rename), deletions catalog first,
and a pinned source that serves the bytes of its first read to every later one."""

from __future__ import annotations

import datetime as dt
import errno
import os
import pathlib

import pytest

from sidecar import clock
from sidecar.service import BackupService, JobFailed
from sidecar.store.sink import ArchiveSink
from sidecar.store.source import ArchiveReadError, ArchiveSource, sniff
from sidecar.text import iso_utc


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
    now = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)
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
    with clock.set_to(now), pytest.raises(Crash):
        service.run_prune()
    monkeypatch.undo()
    assert completed_without_file(service) == []
    # the next prune finishes the interrupted deletion: both old archives and their entries go
    with clock.set_to(now):
        BackupService(settings).run_prune()
    assert [e["status"] for e in service.list_backups()] == ["completed"]
    assert sorted(p.name for p in settings.backup_dir.glob("*.gz")) == [service.list_backups()[0]["fileName"]]


def test_a_failed_rename_leaves_no_completed_entry_without_its_file(
    make_settings, sample_counts, monkeypatch
):
    settings = make_settings(database="maekcord")
    service = BackupService(settings)
    real_replace = os.replace
    completed_at_rename: list[list[str]] = []

    def failing_rename(src, dst):
        if str(dst).endswith(".gz"):  # the archive's rename (the catalog's goes to backup-info.json)
            completed_at_rename.append(
                [e["fileName"] for e in service.list_backups() if e["status"] == "completed"]
            )
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_rename)
    with pytest.raises(JobFailed, match=r"cannot write .*Input/output error"):
        service.run_backup()
    monkeypatch.undo()
    assert completed_at_rename == [[]]  # when the archive was renamed, no entry said completed
    entry = service.list_backups()[-1]
    assert entry["status"] == "failed" and entry["failedStage"] == "write"
    assert list(settings.backup_dir.glob("*.gz*")) == [] and list(settings.backup_dir.glob(".*partial")) == []
    assert completed_without_file(service) == []


def test_a_pinned_local_source_reads_its_first_bytes_after_the_file_is_replaced(tmp_path):
    path = tmp_path / "b-2025-01-01T02-00-00.gz"
    path.write_bytes(b"the bytes that were verified")
    source = ArchiveSource(path)
    with source.pinned():
        with source.open_stored() as raw:
            first = raw.read()
        replacement = tmp_path / "other"
        replacement.write_bytes(b"something else")
        os.replace(replacement, path)  # a new file under the name, between the two passes
        for _ in range(2):
            with source.open_stored() as raw:
                assert raw.read() == first
    with source.open_stored() as raw:  # unpinned: the file as it is now
        assert raw.read() == b"something else"


def open_paths() -> set[str]:
    """The files this process holds open."""
    fds = pathlib.Path("/proc/self/fd")
    return {os.path.realpath(fd) for fd in fds.iterdir() if fd.is_symlink()}


def test_a_commit_makes_the_bytes_durable_before_they_take_the_final_name(tmp_path, monkeypatch):
    """Every stored byte flushed and fsynced, the partial file closed, then the rename, then the
    directory's fsync: a crash at any point leaves either no NAME or a NAME with all its bytes."""
    events: list[tuple] = []
    synced_size: dict[str, int] = {}
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        synced_size.setdefault(events[-1][1], os.fstat(fd).st_size)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst), str(src) in open_paths()))
        real_replace(src, dst)

    final = tmp_path / "b.gz"
    with ArchiveSink(final) as sink:
        sink.archive.write(os.urandom(300_000))  # more than one buffer's worth
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        digest = sink.commit()
    monkeypatch.undo()
    partial = str(sink.partial)
    assert events == [
        ("fsync", partial),
        ("replace", str(final), False),  # closed before it takes its name
        ("fsync", str(tmp_path)),  # the directory: the new name is durable
    ]
    assert synced_size[partial] == digest.size  # flushed before the fsync: every byte was synced
    assert not sink.partial.exists() and final.stat().st_size == digest.size


class RecordingUpload:
    """A tee that keeps what it is sent and counts its aborts (the bucket side of a streaming upload)."""

    def __init__(self) -> None:
        self.data, self.aborts = bytearray(), 0

    def write(self, data) -> int:
        self.data += data
        return len(data)

    def commit(self, **_: object) -> None:
        raise AssertionError("an aborted sink never commits its tee")

    def abort(self) -> None:
        self.aborts += 1


def test_an_abort_mid_archive_removes_the_partial_and_aborts_the_tee_once(tmp_path):
    """Aborted while gzip still holds a trailer (the layers below already closed): no error, no file,
    and the tee aborted once even when the ``with`` block's exit aborts again."""
    tee = RecordingUpload()
    final = tmp_path / "b.gz"
    with ArchiveSink(final, tee=tee) as sink:
        sink.archive.write(os.urandom(200_000))
        sink.abort()
        assert not sink.partial.exists()
    assert tee.aborts == 1 and tee.data  # the bytes had streamed; the upload is dropped
    assert sorted(tmp_path.iterdir()) == []


def test_an_abort_never_raises_when_the_partial_or_its_descriptor_is_gone(tmp_path):
    """A recovery removed the partial file, or its descriptor failed: the abort still finishes."""
    with ArchiveSink(tmp_path / "a.gz") as sink:
        sink.gzipped.write(b"x")
        sink.partial.unlink()
    with ArchiveSink(tmp_path / "b.gz") as sink:
        sink.gzipped.write(b"x" * 10)
        (fd,) = [fd.name for fd in pathlib.Path("/proc/self/fd").iterdir() if fd.resolve() == sink.partial]
        os.close(int(fd))  # beneath the file object: closing it now fails (EBADF)
    assert sorted(tmp_path.iterdir()) == []


def test_a_file_that_is_no_archive_is_shown_by_its_first_bytes_control_characters_as_dots():
    with pytest.raises(ArchiveReadError) as refused:
        sniff(b"\x00 PK\x03\x04\r\nzz")
    assert refused.value.check == "gzip" and refused.value.offset == 0
    assert str(refused.value) == (
        "not a gzip-compressed mongodump archive: the file starts with 0020504b03040d0a ('. PK....'); "
        "a gzip file starts with 1f8b, an archive with 6de29981"
    )
