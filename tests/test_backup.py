"""The whole backup path against a real MongoDB-wire server: archive, catalog, failures, recovery."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import bson
import pymongo
import pytest

from sidecar.archive import ArchiveReader, DocumentChunk, NamespaceEnd
from sidecar.archive.metadata import parse_metadata_json
from sidecar.codec.gzip_stream import gzip_reader
from sidecar.embedded import EmbeddedServer
from sidecar.engine.dump import DumpError, DumpOptions, NativeDump
from sidecar.jobs import JobBusy
from sidecar.progress import Progress
from sidecar.sampledata import load_bulk_data, load_sample_data
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import STATUS_COMPLETED, STATUS_FAILED
from tests.helpers import discard
from tests.test_restore_support import raw_documents


class NamespaceHook(Progress):
    """The dump's progress, calling ``hook`` as each namespace is done: a place to act mid-dump."""

    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name == "namespaces_done" and value:
            self.hook(self)


SAMPLE_NS = "maekcord.*,maekcord_files.*,analytics.*"


def read_archive(path: Path) -> tuple[object, dict[str, list[bytes]], dict[str, NamespaceEnd]]:
    with open(path, "rb") as raw, gzip_reader(raw) as stream:
        reader = ArchiveReader(stream)
        prelude = reader.read_prelude()
        docs: dict[str, list[bytes]] = {}
        ends: dict[str, NamespaceEnd] = {}
        for event in reader.events():
            if isinstance(event, DocumentChunk):
                docs.setdefault(str(event.namespace), []).extend(bytes(d) for d in event.documents())
            else:
                ends[str(event.namespace)] = event
    return prelude, docs, ends


@pytest.fixture
def sample_backup(make_settings, sample_counts):
    settings = make_settings(ns_include=SAMPLE_NS)
    service = BackupService(settings)
    entry = service.run_backup()
    return settings, service, entry


def test_archive_holds_every_document_byte_identical(sample_backup, mongo_client, sample_counts):
    settings, _, entry = sample_backup
    prelude, docs, ends = read_archive(settings.backup_dir / entry["fileName"])
    assert prelude.header.version == "0.1"
    assert prelude.header.concurrent_collections == settings.parallel_collections
    assert set(ends) == set(sample_counts)
    views = {str(c.namespace) for c in prelude.collections if c.type == "view"}
    assert views == {"maekcord.active_patients"}
    for ns, count in sample_counts.items():
        assert ends[ns].documents == count, ns
        expected = [] if ns in views else raw_documents(mongo_client, ns)
        assert sorted(docs.get(ns, [])) == sorted(expected), ns


def test_archive_metadata_carries_indexes_and_options(sample_backup, mongo_client):
    settings, _, entry = sample_backup
    prelude, _, _ = read_archive(settings.backup_dir / entry["fileName"])
    meta = {str(c.namespace): c for c in prelude.collections}
    for ns, item in meta.items():
        db, coll = ns.split(".", 1)
        info = next(mongo_client[db].list_collections(filter={"name": coll}))
        parsed = parse_metadata_json(item.metadata)
        assert item.type == info.get("type", "collection")
        assert parsed["collectionName"] == coll
        assert dict(parsed.get("options", {})) == dict(info.get("options", {})), ns
        expected = [] if item.type == "view" else [dict(i) for i in mongo_client[db][coll].list_indexes()]
        assert [dict(i) for i in parsed["indexes"]] == expected, ns
    patients = parse_metadata_json(meta["maekcord.patients"].metadata)
    names = {i["name"]: i for i in patients["indexes"]}
    assert names["patientId_unique"]["unique"] is True
    assert "partialFilterExpression" in names["active_ward"]
    sessions = parse_metadata_json(meta["maekcord.sessions"].metadata)
    assert any(i.get("expireAfterSeconds") == 3600 for i in sessions["indexes"])
    assert parse_metadata_json(meta["maekcord.audit_log"].metadata)["options"]["capped"] is True
    assert meta["maekcord.active_patients"].type == "view"


def test_catalog_entry_keeps_the_runbook_fields(sample_backup, sample_counts):
    settings, service, entry = sample_backup
    assert re.fullmatch(r"maekcord-backup-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.gz", entry["fileName"])
    assert re.fullmatch(r"\d+(\.\d)?(B|KB|MB|GB)", entry["fileSize"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["createdAt"])
    assert entry["status"] == STATUS_COMPLETED
    path = settings.backup_dir / entry["fileName"]
    assert entry["sizeBytes"] == path.stat().st_size
    import hashlib

    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {ns: v["documents"] for ns, v in entry["namespaces"].items()} == sample_counts
    assert service.catalog.reconcile(settings.file_prefix).clean
    assert not list(settings.backup_dir.glob("*.partial"))


def test_oplog_captures_writes_made_during_the_dump(own_server):
    client = pymongo.MongoClient(own_server.uri)
    load_sample_data(client, patients=50)
    probe_ids = []

    def write_during_dump(state) -> None:
        if state.namespaces_done == 1 and not probe_ids:
            probe_ids.append(client.maekcord.during_dump.insert_one({"written": "mid-dump"}).inserted_id)

    out = io.BytesIO()
    result = NativeDump(client, DumpOptions(parallel_collections=1), NamespaceHook(write_during_dump)).run(
        out
    )
    assert probe_ids and result.oplog is not None and result.oplog.entries >= 2
    out.seek(0)
    reader = ArchiveReader(out)
    reader.read_prelude()
    oplog = [
        bson.decode(bytes(d))
        for e in reader.events()
        if isinstance(e, DocumentChunk) and e.namespace.is_oplog
        for d in e.documents()
    ]
    inserts = [e for e in oplog if e["op"] == "i" and e["ns"] == "maekcord.during_dump"]
    assert [e["o"]["_id"] for e in inserts] == probe_ids


def test_oplog_overflow_is_a_clear_failure(tmp_path):
    server = EmbeddedServer(tmp_path / "small-oplog", extra_args=("--oplog-max-entries", "20")).start()
    try:
        client = pymongo.MongoClient(server.uri)
        load_sample_data(client, patients=20)

        def flood(state) -> None:
            if state.namespaces_done == 1:
                client.scratch.flood.insert_many([{"i": i} for i in range(100)])
                # mongod trims a full oplog by itself; the embedded server trims on this command
                client.admin.command({"secantusAdmin.pruneOplog": 1})

        with pytest.raises(DumpError, match="oplog overflow"):
            NativeDump(client, DumpOptions(parallel_collections=1), NamespaceHook(flood)).run(io.BytesIO())
    finally:
        discard(server)


def test_mongodb_down_fails_fast_with_host_and_no_password(make_settings):
    settings = make_settings(
        mongodb_uri="mongodb://admin:s3cret-pw@127.0.0.1:9/?directConnection=true", connect_timeout_seconds=1
    )
    service = BackupService(settings)
    started = time.monotonic()
    with pytest.raises(JobFailed) as info:
        service.run_backup()
    assert time.monotonic() - started < 10
    assert info.value.stage == "connect"
    assert "127.0.0.1:9" in str(info.value) and "s3cret-pw" not in str(info.value)
    [entry] = service.list_backups()
    assert entry["status"] == STATUS_FAILED and "s3cret-pw" not in str(entry)
    assert not [p for p in settings.backup_dir.iterdir() if p.suffix == ".gz"]


def test_wrong_credentials_name_the_host_not_the_password(make_settings, mongo_uri):
    host = mongo_uri.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    settings = make_settings(
        mongodb_uri=f"mongodb://nobody:wrong-pw-123@{host}/?authSource=admin", connect_timeout_seconds=3
    )
    with pytest.raises(JobFailed, match="authentication failed") as info:
        BackupService(settings).run_backup()
    assert host in str(info.value) and "wrong-pw-123" not in str(info.value)


def test_cli_failure_is_one_line_and_non_zero(tmp_path):
    env = {
        **os.environ,
        "SIDECAR_MONGODB_URI": "mongodb://u:hunter2-secret@127.0.0.1:9/",
        "SIDECAR_BACKUP_DIR": str(tmp_path),
        "SIDECAR_CONNECT_TIMEOUT_SECONDS": "0.5",
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_LOG_DIR": str(tmp_path / "logs"),
    }
    env.pop("SIDECAR_TEST_MONGODB_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "backup", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "sidecar: error: cannot reach MongoDB at 127.0.0.1:9: no answer within 0.5s"
    ]
    logged = next((tmp_path / "logs").glob("error-*.log")).read_text()
    assert "backup job" in logged and "cannot reach MongoDB at 127.0.0.1:9" in logged
    assert "hunter2-secret" not in proc.stdout + proc.stderr + logged
    assert "Traceback" not in proc.stderr


def test_bad_setting_is_named(tmp_path):
    env = {**os.environ, "SIDECAR_PARALLEL_COLLECTIONS": "many", "SIDECAR_BACKUP_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "sidecar: error: SIDECAR_PARALLEL_COLLECTIONS: must be a whole number, got 'many'"
    )


def test_killed_backup_leaves_no_completed_entry_and_next_run_recovers(own_server, tmp_path):
    load_bulk_data(pymongo.MongoClient(own_server.uri), target_bytes=24_000_000, collections=2)
    backup_dir = tmp_path / "killed"
    env = {
        **os.environ,
        "SIDECAR_MONGODB_URI": own_server.uri,
        "SIDECAR_BACKUP_DIR": str(backup_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_PARALLEL_COLLECTIONS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "backup", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        partial = list(backup_dir.glob(".*.partial")) if backup_dir.exists() else []
        if partial and partial[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the backup finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    settings_env = {
        k: v for k, v in env.items() if k.startswith("SIDECAR_") and k != "SIDECAR_TEST_MONGODB_URI"
    }
    from sidecar.config import load_settings

    service = BackupService(load_settings(settings_env))
    [entry] = service.list_backups()
    assert entry["status"] == "running"  # the truth: it never finished
    assert not list(backup_dir.glob("*.gz"))
    good = service.run_backup()
    entries = {e["fileName"]: e for e in service.list_backups()}
    assert entries[entry["fileName"]]["status"] == STATUS_FAILED
    assert "interrupted" in entries[entry["fileName"]]["error"]
    assert entries[good["fileName"]]["status"] == STATUS_COMPLETED
    assert not list(backup_dir.glob(".*.partial"))


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_removes_the_partial_file_and_keeps_older_archives(
    make_settings, small_disk, sample_counts
):
    small = make_settings(backup_dir=small_disk, ns_include="analytics.*")
    first = BackupService(small).run_backup()
    before = (small_disk / first["fileName"]).read_bytes()
    full = make_settings(backup_dir=small_disk, ns_include=SAMPLE_NS)
    service = BackupService(full)
    with pytest.raises(JobFailed, match="disk full") as info:
        service.run_backup()
    assert info.value.stage == "write"
    assert (small_disk / first["fileName"]).read_bytes() == before
    assert not list(small_disk.glob(".*.partial"))
    statuses = [e["status"] for e in service.list_backups()]
    assert statuses == [STATUS_COMPLETED, STATUS_FAILED]


def test_second_job_is_refused_while_one_holds_the_lock(make_settings, sample_counts):
    settings = make_settings(ns_include="analytics.*")
    first, second = BackupService(settings), BackupService(settings)
    job = first.new_job("backup")
    job.started_at = "now"
    settings.backup_dir.mkdir(parents=True)
    first.lock.acquire(job)
    try:
        with pytest.raises(JobBusy, match=job.id):
            second.run_backup()
    finally:
        first.lock.release()
    assert second.run_backup()["status"] == STATUS_COMPLETED


def test_a_dump_that_stops_early_leaves_the_callers_cancel_flag_alone(mongo_client, sample_counts):
    """The service's cancel Event outlives one job; an engine failure must not poison the next job."""
    cancel = threading.Event()

    def fail_after_first_namespace(state) -> None:
        if state.namespaces_done == 1:
            raise RuntimeError("simulated writer failure")

    options = DumpOptions(ns_include=("maekcord.*",), parallel_collections=2)
    with pytest.raises(RuntimeError, match="simulated writer failure"):
        NativeDump(mongo_client, options, NamespaceHook(fail_after_first_namespace), cancel).run(io.BytesIO())
    assert not cancel.is_set()
    assert NativeDump(mongo_client, options, cancel=cancel).run(io.BytesIO()).namespaces
