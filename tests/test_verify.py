"""Integrity tests (quick, full, drill) against the real server, and what they record in the catalog."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymongo
import pyrage
import pytest

from sidecar.cli import main as cli_main
from sidecar.embedded import EmbeddedServer
from sidecar.integrity.drill import DRILL_PREFIX, drill_database_name, drop_drill_databases
from sidecar.integrity.levels import verify_archive
from sidecar.integrity.proof_server import given_server
from sidecar.jobs import Job, JobLock
from sidecar.progress import Progress
from sidecar.sampledata import load_bulk_data
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import newest_usable
from sidecar.time_input import parse_iso
from tests.helpers import discard, settings_for
from tests.test_restore_support import sample_archive_fixture  # noqa: F401


def drill_databases(client: pymongo.MongoClient) -> list[str]:
    return sorted(n for n in client.list_database_names() if n.startswith(DRILL_PREFIX))


@pytest.mark.parametrize("level", ["quick", "full", "drill"])
def test_each_level_passes_and_is_recorded_in_the_catalog(
    level, sample_archive, tmp_path, mongo_uri, mongo_client
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    name = sample_archive.entry["fileName"]
    job = service.new_job("verify", level=level)
    phases: list[tuple[str, int]] = []  # what the job's progress shows, in turn: each phase, and the
    begin = job.progress.begin  # bytes the one before it counted

    def shown(phase: str, *args: Any, **kwargs: Any) -> None:
        phases.append((phase, job.progress.bytes))
        begin(phase, *args, **kwargs)

    job.progress.begin = shown  # type: ignore[method-assign]
    result = service.run_verify(job, file_name=name, level=level)
    assert result["ok"] is True and result["inCatalog"] is True
    raw_size = len(gzip.decompress(sample_archive.path.read_bytes()))
    if level == "drill":  # the scan's bytes, then the drill's restore
        assert phases == [("verify", 0), ("prepare", raw_size)]
    else:
        assert phases == [("verify", 0)] and job.progress.bytes == raw_size
    entry = service.catalog.get(name)
    record = entry["verification"][level]
    assert record["ok"] is True and record["reason"] is None
    assert record["durationSeconds"] >= 0
    parse_iso(record["at"])  # ISO-8601 UTC with milliseconds
    assert record["at"].endswith("Z") and len(record["at"]) == len("2024-12-01T02:00:00.000Z")
    assert entry["lastVerification"] == {"level": level, "ok": True, "at": record["at"]}
    quick = entry["verification"]["quick"]
    assert quick["sha256"] == sample_archive.entry["sha256"]
    assert quick["sizeBytes"] == sample_archive.entry["sizeBytes"]
    assert quick["uncompressedBytes"] == raw_size
    if level != "quick":
        full = entry["verification"]["full"]
        assert full["uncompressedBytes"] == raw_size
        assert full["documents"] == sum(ns["documents"] for ns in sample_archive.entry["namespaces"].values())
        assert full["namespaces"] == len(sample_archive.entry["namespaces"])
    if level == "drill":
        assert record["documents"] == entry["verification"]["full"]["documents"]
        assert record["indexes"] >= 7  # 4 on patients, 2 on sessions, one _id_ per collection...
        assert sorted(record["scratchDropped"]) == sorted(record["scratchDatabases"])
        assert len(record["scratchDatabases"]) == 3
        assert drill_databases(mongo_client) == []


def test_a_file_not_in_the_catalog_is_checked_on_its_own_merits(sample_archive, tmp_path, mongo_uri):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    outside = tmp_path / "elsewhere" / "copy.gz"
    outside.parent.mkdir()
    shutil.copyfile(sample_archive.path, outside)
    before = service.catalog.load()
    result = service.run_verify(file_name=str(outside), level="full")
    assert result["ok"] and result["inCatalog"] is False
    assert result["verification"]["full"]["documents"] > 0
    assert service.catalog.load() == before  # nothing written to the catalog


def test_full_compares_counts_with_the_manifest_and_quick_the_sha256(sample_archive, tmp_path, mongo_uri):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    name = sample_archive.entry["fileName"]
    manifest = dict(sample_archive.entry["namespaces"])
    manifest["maekcord.patients"] = {**manifest["maekcord.patients"], "documents": 499}
    service.catalog.patch(name, namespaces=manifest)
    with pytest.raises(
        JobFailed, match=r"maekcord\.patients: documents is 500 in the archive, the catalog recorded 499"
    ) as info:
        service.run_verify(file_name=name, level="full")
    assert info.value.stage == "verify"
    entry = service.catalog.get(name)
    assert entry["verification"]["quick"]["ok"] is True
    assert entry["verification"]["full"]["ok"] is False
    assert entry["lastVerification"]["ok"] is False

    service.catalog.patch(name, sha256="0" * 64)
    with pytest.raises(JobFailed, match=r"sha256 is .*, the catalog recorded 0000"):
        service.run_verify(file_name=name, level="quick")
    assert service.catalog.get(name)["verification"]["quick"]["ok"] is False


def test_latest_file_resolution_and_its_errors(sample_archive, tmp_path, mongo_uri):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    result = service.run_verify(level="quick")  # no FILE: the newest completed backup
    assert result["fileName"] == sample_archive.entry["fileName"]
    with pytest.raises(JobFailed, match=r"no such archive file: nowhere/x\.gz"):
        service.run_verify(file_name="nowhere/x.gz", level="quick")
    with pytest.raises(JobFailed, match=r"neither in the catalog .* nor an existing file"):
        service.run_verify(file_name="maekcord-backup-1999-01-01T00-00-00.gz")
    # a path into the backup directory is the catalog's entry: the result is recorded
    service.run_verify(
        file_name=str(service.settings.backup_dir / sample_archive.entry["fileName"]), level="quick"
    )
    assert service.catalog.get(sample_archive.entry["fileName"])["lastVerification"]["level"] == "quick"


def test_a_verify_refuses_to_start_while_another_job_holds_the_lock(sample_archive, tmp_path, mongo_uri):
    from sidecar.jobs import JobBusy

    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    other = JobLock(service.settings.backup_dir)
    other.acquire(Job("backup", "manual"))
    try:
        with pytest.raises(JobBusy):
            service.run_verify(level="quick")
    finally:
        other.release()


def test_age_encrypted_archives_verify_with_the_identity(sample_archive, tmp_path, mongo_uri):
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(str(identity) + "\n")
    encrypted = tmp_path / "copy.gz.age"
    encrypted.write_bytes(pyrage.encrypt(sample_archive.path.read_bytes(), [identity.to_public()]))
    without = BackupService(settings_for(mongo_uri, tmp_path / "a"))
    with pytest.raises(JobFailed, match="age-encrypted: set SIDECAR_AGE_IDENTITY_FILE"):
        without.run_verify(file_name=str(encrypted), level="full")
    with_key = BackupService(settings_for(mongo_uri, tmp_path / "b", age_identity_file=key_file))
    result = with_key.run_verify(file_name=str(encrypted), level="full")
    assert result["verification"]["full"]["documents"] > 0


def test_cli_verify_prints_one_line_and_exits_by_the_outcome(
    sample_archive, tmp_path, mongo_uri, monkeypatch, capsys
):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri)
    for key, value in {
        "SIDECAR_MONGODB_URI": mongo_uri,
        "SIDECAR_BACKUP_DIR": str(service.settings.backup_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["verify", "--latest", "--level", "full", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"full verification passed: {path.name} (") and out.count("\n") == 1
    path.write_bytes(path.read_bytes()[:1000])
    assert cli_main(["verify", path.name, "--level", "quick", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sidecar: error: quick verification of") and "truncated" in err[-1]


def test_drill_drops_leftovers_of_crashed_drills_first(sample_archive, tmp_path, mongo_uri, scratch_server):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri, drill_mongodb_uri=scratch_server.uri)
    leftover = drill_database_name("deadbeef0000", "maekcord")
    with pymongo.MongoClient(scratch_server.uri) as scratch:
        scratch[leftover].crashed.insert_one({"x": 1})
        result = service.run_verify(level="drill")
        record = result["verification"]["drill"]
        assert leftover in record["leftoversDropped"] and record["server"] == "scratch"
        assert drill_databases(scratch) == []


def test_scratch_databases_that_cannot_be_listed_or_dropped_are_named_with_the_servers_error():
    refused = "127.0.0.1:1: [Errno 111] Connection refused"  # nothing listens on port 1
    with pymongo.MongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200) as gone:
        assert drop_drill_databases(gone) == (
            [],
            [{"name": f"{DRILL_PREFIX}*", "error": f"cannot list databases: {refused}"}],
        )
        named = f"{DRILL_PREFIX}j1_maekcord"
        assert drop_drill_databases(gone, f"{DRILL_PREFIX}j1_", [named]) == (
            [],
            [{"name": named, "error": refused}],
        )


def test_drill_database_names_stay_within_mongodb_limits():
    assert drill_database_name("abc", "maekcord") == "sidecar_drill_abc_maekcord"
    long = drill_database_name("0123456789ab", "x" * 60)
    assert long.startswith("sidecar_drill_0123456789ab_") and len(long) <= 63


def _stop_when_restoring(job: Job, stop: Callable[[], None]) -> threading.Event:
    """Call ``stop`` once the drill of ``job`` has restored 1000 documents; set the event then."""
    stopped = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.state not in ("failed", "succeeded"):
            progress = job.progress.as_json()
            if progress.get("phase") == "drill-documents" and progress.get("documents", 0) > 1000:
                stop()
                stopped.set()
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    return stopped


def _bulk_backup(server: EmbeddedServer, tmp_path: Path, **values: object) -> tuple[BackupService, str]:
    with pymongo.MongoClient(server.uri) as client:
        load_bulk_data(client, target_bytes=6 * 1024 * 1024, collections=1, db_name="bulk")
    service = BackupService(settings_for(server.uri, tmp_path, connect_timeout_seconds=1, **values))
    return service, service.run_backup()["fileName"]


def test_a_drill_that_loses_its_server_midway_leaves_nothing_behind_or_says_what(
    own_server, scratch_server, tmp_path
):
    """The scratch server stops during the drill's restore: the failure names the scratch databases
    it could not drop; once the server is back, the next drill drops them and passes."""
    service, name = _bulk_backup(own_server, tmp_path, drill_mongodb_uri=scratch_server.uri)
    job = service.new_job("verify", level="drill")
    stopped = _stop_when_restoring(job, scratch_server.stop)
    with pytest.raises(JobFailed) as info:
        service.run_verify(job, level="drill")
    assert stopped.wait(10), "the drill finished before the server could be stopped"
    message = str(info.value)
    assert "restore into the scratch databases failed" in message
    entry = service.catalog.get(name)
    record = entry["verification"]["drill"]
    assert record["ok"] is False and record["failedCheck"] == "drill-server"
    # the lost server proved nothing about the archive: its verdict is still the full test's pass
    assert entry["lastVerification"]["level"] == "full" and entry["lastVerification"]["ok"]
    assert newest_usable(service.catalog.load())["fileName"] == name
    reported = {n["name"] for n in record.get("scratchNotDropped", [])}
    assert reported, "the failure must say which scratch databases it could not drop"
    assert all(name in message for name in reported)
    assert all(name.startswith(f"{DRILL_PREFIX}{job.id}_") for name in reported)

    restarted = EmbeddedServer(
        scratch_server.data_dir, port=scratch_server.port, extra_args=scratch_server.extra_args
    ).start()
    try:
        with pymongo.MongoClient(restarted.uri) as client:
            left = set(drill_databases(client))
            assert left <= reported  # nothing left that the failure did not name
            again = service.run_verify(level="drill")["verification"]["drill"]
            assert set(again.get("leftoversDropped") or []) == left
            assert drill_databases(client) == []
    finally:
        discard(restarted)


def _scratch_pid(drill_dir: Path) -> int:
    (pid_file,) = drill_dir.glob("server-*/pid")
    return int(pid_file.read_text())


def test_a_drill_whose_embedded_server_is_killed_fails_as_the_servers_and_leaves_nothing(
    own_server, tmp_path
):
    """The default: a throwaway embedded server. Killed midway, the drill fails as drill-server,
    no server runs and no scratch directory is left; the backed-up server saw none of it."""
    service, name = _bulk_backup(own_server, tmp_path)
    drill_dir = service.settings.drill_directory
    with pymongo.MongoClient(own_server.uri) as client:
        oplog_before = client.local["oplog.rs"].count_documents({})
    job = service.new_job("verify", level="drill")
    pids: list[int] = []

    def kill() -> None:
        pids.append(_scratch_pid(drill_dir))
        os.kill(pids[0], signal.SIGKILL)

    stopped = _stop_when_restoring(job, kill)
    with pytest.raises(JobFailed):
        service.run_verify(job, level="drill")
    assert stopped.wait(10), "the drill finished before its server could be killed"
    record = service.catalog.get(name)["verification"]["drill"]
    assert record["ok"] is False and record["failedCheck"] == "drill-server"
    assert record["server"] == "embedded"
    assert not Path(f"/proc/{pids[0]}").exists()
    assert list(drill_dir.iterdir()) == []
    again = service.run_verify(level="drill")["verification"]["drill"]
    assert again["ok"] and again["server"] == "embedded" and again["writtenBytes"] > 5 * 1024 * 1024
    assert list(drill_dir.iterdir()) == []
    with pymongo.MongoClient(own_server.uri) as client:
        assert drill_databases(client) == []
        assert client.local["oplog.rs"].count_documents({}) == oplog_before


def test_the_next_drill_removes_the_scratch_server_a_killed_sidecar_left(
    sample_archive, tmp_path, mongo_uri, caplog
):
    """A sidecar killed during a drill leaves its embedded server running and its directory: the next
    drill ends that process and removes the directory before it starts its own, and says so."""
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    home = service.settings.drill_directory / "server-deadbeef0000"
    home.mkdir(parents=True)
    left = EmbeddedServer(home / "data", extra_args=("--standalone",), pid_file=home / "pid").start()
    try:
        with caplog.at_level(logging.WARNING, logger="sidecar.integrity"):
            record = service.run_verify(level="drill")["verification"]["drill"]
        assert record["ok"] and record["scratchServersRemoved"] == ["server-deadbeef0000"]
        removed = [r.getMessage() for r in caplog.records if r.name == "sidecar.integrity"]
        assert removed == [f"removed the scratch server directory {home} left by a killed proof"]
        assert left.process.wait(10) is not None  # ended
        assert list(service.settings.drill_directory.iterdir()) == []
    finally:
        discard(left)


def test_verify_of_a_missing_file_is_recorded_as_failed(sample_archive, tmp_path, mongo_uri):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri)
    Path(path).unlink()
    with pytest.raises(JobFailed, match="does not exist"):
        service.run_verify(level="full")
    entry = service.catalog.get(path.name)
    assert entry["verification"]["quick"]["ok"] is False
    assert entry["verification"]["full"]["ok"] is False


def test_a_drill_can_use_a_separate_scratch_server(
    sample_archive, scratch_server, tmp_path, mongo_uri, mongo_client
):
    own_server = scratch_server
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri, drill_mongodb_uri=own_server.uri)
    assert service.settings.public_view()["SIDECAR_DRILL_MONGODB_URI"] == "set"  # a secret, masked
    seen: dict[str, set[str]] = {"drill": set(), "backed-up": set()}
    done = threading.Event()

    def watch() -> None:
        with pymongo.MongoClient(own_server.uri) as scratch:
            while not done.is_set():
                seen["drill"].update(drill_databases(scratch))
                seen["backed-up"].update(drill_databases(mongo_client))
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        record = service.run_verify(level="drill")["verification"]["drill"]
    finally:
        done.set()
        watcher.join()
    assert seen["drill"] and seen["drill"] <= set(record["scratchDatabases"])
    assert seen["backed-up"] == set()
    with pymongo.MongoClient(own_server.uri) as scratch:
        assert drill_databases(scratch) == []


def test_full_fails_when_the_archive_lacks_a_namespace_the_catalog_lists(sample_archive, tmp_path, mongo_uri):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    name = sample_archive.entry["fileName"]
    manifest = dict(sample_archive.entry["namespaces"])
    manifest["maekcord.discharged"] = {"documents": 12, "bytes": 3400, "crc": 77, "type": "collection"}
    service.catalog.patch(name, namespaces=manifest)
    with pytest.raises(
        JobFailed, match=r"namespaces in the catalog but not in the archive: maekcord\.discharged"
    ):
        service.run_verify(file_name=name, level="full")
    assert service.catalog.get(name)["verification"]["full"]["ok"] is False


def test_full_fails_on_a_crc_the_catalog_did_not_record_though_the_counts_match(
    sample_archive, tmp_path, mongo_uri
):
    """Same documents, same bytes, another CRC-64: content changed in place (a flipped bit inside a
    value keeps every count), and only the CRC tells."""
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    name = sample_archive.entry["fileName"]
    manifest = {ns: dict(facts) for ns, facts in sample_archive.entry["namespaces"].items()}
    recorded = manifest["maekcord.patients"]["crc"]
    manifest["maekcord.patients"]["crc"] = recorded ^ 1
    service.catalog.patch(name, namespaces=manifest)
    with pytest.raises(JobFailed) as failed:
        service.run_verify(file_name=name, level="full")
    assert str(failed.value).count("the catalog recorded") == 1
    assert f"maekcord.patients: crc is {recorded} in the archive, the catalog recorded {recorded ^ 1}" in str(
        failed.value
    )
    assert service.catalog.get(name)["verification"]["full"]["ok"] is False


def test_a_drill_fails_when_the_restored_data_differs_from_the_archive(
    sample_archive, tmp_path, mongo_uri, mongo_client
):
    """The restore of the drill succeeds, then a restored document and a collection's options change
    before the comparison."""
    entry = sample_archive.entry
    scratch = drill_database_name("tamper", "maekcord")
    changed: list[dict] = []

    class Tamper(Progress):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "phase" and self.shown_phase == "drill-done":  # restored, not yet compared
                db = mongo_client[scratch]
                db.patients.update_one({}, {"$set": {"ward": "changed after the restore"}})
                db.command("collMod", "appointments", validator={"patientId": {"$exists": True}})
                changed.extend(db.list_collections(filter={"name": "appointments"}))

    report = verify_archive(
        sample_archive.path,
        entry,
        "drill",
        job_id="tamper",
        drill_server=lambda raw_bytes: given_server(mongo_uri),
        progress=Tamper(),
    )
    assert report.records["full"]["ok"] is True
    drill = report.records["drill"]
    assert drill["ok"] is False and drill["failedCheck"] == "drill"
    options = f"maekcord.appointments: options are {dict(changed[0]['options'])}, the archive has {{}}"
    hashed = "maekcord.patients: the content hash of the restored documents differs"
    assert drill["mismatches"] == [options, hashed]
    assert drill["reason"] == f"the restored data differs from the archive: {options} (and 1 more)"
    assert drill_databases(mongo_client) == []
