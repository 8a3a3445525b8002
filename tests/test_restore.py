"""Restores against the real server: round trip, partial, dry run, safety backup, errors, oplog, CLI.

Every restore goes to databases renamed with --ns-from/--ns-to (``rt_<random>``), dropped afterwards;
the sample databases are only read.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import bson
import pymongo
import pytest
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.archive import ArchiveHeader, ArchiveWriter, CollectionMetadata, Namespace
from sidecar.archive.metadata import build_metadata_json
from sidecar.cli import main as cli_main
from sidecar.engine.namespaces import Renamer
from sidecar.engine.replay.archive_oplog import server_has_apply_ops
from sidecar.integrity.compare import index_signature
from sidecar.jobs import Job, JobBusy, JobLock
from sidecar.service import JobFailed
from sidecar.store.catalog import archive_name
from tests.helpers import job_log, settings_for
from tests.test_restore_support import (  # noqa: F401 - fixtures
    SAMPLE_DBS,
    database_exists,
    raw_documents,
    sample_archive_fixture,
    scratch_db_fixture,
    write_gzip,
)


def renamed(targets: dict[str, str]) -> dict[str, tuple[str, ...]]:
    return {
        "ns_from": tuple(f"{src}.*" for src in targets),
        "ns_to": tuple(f"{dst}.*" for dst in targets.values()),
    }


def collection_infos(client: pymongo.MongoClient, db: str) -> dict[str, dict]:
    return {
        info["name"]: {"type": info.get("type"), "options": dict(info.get("options", {}))}
        for info in client[db].list_collections()
    }


def test_round_trip_is_byte_identical_with_indexes_options_and_views(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    targets = {db: scratch_db() for db in SAMPLE_DBS}
    result = service.run_restore(file_name=sample_archive.entry["fileName"], **renamed(targets))
    assert result["postRestoreCheck"]["ok"] is True
    assert result["safetyBackup"] is None and result["overwrites"] == []
    assert result["errorCount"] == 0
    manifest = sample_archive.entry["namespaces"]
    assert result["documentsWritten"] == sum(ns["documents"] for ns in manifest.values())
    for source_db, target_db in targets.items():
        original, restored = (
            collection_infos(mongo_client, source_db),
            collection_infos(mongo_client, target_db),
        )
        assert restored == original, source_db  # same collections, views, capped sizes, validators
        for name, info in original.items():
            if info["type"] == "view":
                continue
            assert sorted(raw_documents(mongo_client, f"{target_db}.{name}")) == sorted(
                raw_documents(mongo_client, f"{source_db}.{name}")
            ), f"{source_db}.{name}"
            want = {ix["name"]: index_signature(ix) for ix in mongo_client[source_db][name].list_indexes()}
            got = {ix["name"]: index_signature(ix) for ix in mongo_client[target_db][name].list_indexes()}
            assert got == want, f"{source_db}.{name}"
    view = mongo_client[targets["maekcord"]].active_patients
    assert view.count_documents({}) == mongo_client.maekcord.active_patients.count_documents({})


def test_the_runbooks_partial_restore_writes_that_collection_and_nothing_else(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    result = service.run_restore(
        file_name=sample_archive.entry["fileName"],
        ns_include=("maekcord.patients",),
        ns_from="maekcord.*",
        ns_to=f"{target}.*",
    )
    assert [ns["target"] for ns in result["namespaces"]] == [f"{target}.patients"]
    assert mongo_client[target].list_collection_names() == ["patients"]
    assert mongo_client[target].patients.count_documents({}) == 500
    assert result["postRestoreCheck"]["namespaces"][f"{target}.patients"] == {
        "archive": 500,
        "expected": 500,
        "actual": 500,
        "ok": True,
    }


def test_dry_run_reports_namespaces_documents_and_indexes_and_writes_nothing(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    catalog_before = service.catalog.load()
    result = service.run_restore(
        file_name=sample_archive.entry["fileName"],
        ns_include=("maekcord.*",),
        ns_exclude=("maekcord.audit_log",),
        ns_from="maekcord.*",
        ns_to=f"{target}.*",
        dry_run=True,
    )
    assert result["dryRun"] is True
    manifest = sample_archive.entry["namespaces"]
    planned = {ns["source"]: ns for ns in result["namespaces"]}
    expected = sorted(ns for ns in manifest if ns.startswith("maekcord.") and ns != "maekcord.audit_log")
    assert sorted(planned) == expected
    for source, item in planned.items():
        assert item["target"] == source.replace("maekcord.", f"{target}.", 1)
        assert item["documents"] == manifest[source]["documents"]
        assert item["action"] == "create"
    assert planned["maekcord.patients"]["indexes"] == [
        "_id_",
        "active_ward",
        "patientId_unique",
        "ward_birth",
    ]
    assert planned["maekcord.sessions"]["indexes"] == ["_id_", "session_ttl"]
    assert planned["maekcord.active_patients"]["type"] == "view"
    assert result["documents"] == sum(manifest[ns]["documents"] for ns in expected)
    assert result["bytes"] == sum(manifest[ns]["bytes"] for ns in expected)
    assert not database_exists(mongo_client, target)
    assert service.catalog.load() == catalog_before


def test_a_restore_that_overwrites_takes_a_safety_backup_of_exactly_what_it_touches(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    name = sample_archive.entry["fileName"]
    target = scratch_db()
    only_patients = {"ns_include": ("maekcord.patients",), "ns_from": "maekcord.*", "ns_to": f"{target}.*"}
    service.run_restore(file_name=name, **only_patients)
    mongo_client[target].patients.insert_one({"_id": "changed after the backup"})
    mongo_client[target].untouched.insert_one({"_id": 1})

    dry = service.run_restore(file_name=name, drop=True, dry_run=True, **only_patients)
    assert dry["safetyBackup"] == {"wouldBackUp": [f"{target}.patients"]}
    assert mongo_client[target].patients.count_documents({}) == 501  # the dry run wrote nothing

    job = service.new_job("restore")
    phases: list[str] = []  # what the job's progress shows, in turn
    begin = job.progress.begin

    def record(phase: str, *args: Any, **kwargs: Any) -> None:
        phases.append(phase)
        begin(phase, *args, **kwargs)

    job.progress.begin = record  # type: ignore[method-assign]
    result = service.run_restore(job, file_name=name, drop=True, **only_patients)
    assert phases == ["verify", "safety-backup", "prepare"]
    safety = service.catalog.get(result["safetyBackup"])
    assert safety["trigger"] == "pre-restore" and safety["status"] == "completed"
    assert list(safety["namespaces"]) == [f"{target}.patients"]  # not rt.untouched, not the samples
    assert safety["namespaces"][f"{target}.patients"]["documents"] == 501
    assert mongo_client[target].patients.count_documents({}) == 500
    assert mongo_client[target].patients.find_one({"_id": "changed after the backup"}) is None
    # --latest (and a verify without FILE) still means the newest real backup, not the safety copy
    assert service.resolve_archive(None, latest=True)[1]["fileName"] == name

    # the safety backup restores what was there before
    back = service.run_restore(
        file_name=result["safetyBackup"],
        drop=True,
        safety_backup=False,
        ns_from=f"{target}.*",
        ns_to=f"{target}.*",
    )
    assert back["safetyBackup"] is None and back["safetyBackupSkipped"]
    assert mongo_client[target].patients.find_one({"_id": "changed after the backup"}) is not None
    assert len(service.catalog.load()) == 2  # the opted-out restore took no backup


def test_a_safety_backup_that_fails_stops_the_restore_before_its_first_write(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    """It cannot write its archive (a partial file of its name is in the way): nothing is restored, and
    the restore job's log names both namespaces it was to keep."""
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    two = ("maekcord.patients", "maekcord.appointments")
    for ns in two:
        mongo_client[target][ns.split(".")[1]].insert_one({"_id": "live"})
    moment = dt.datetime(2027, 3, 1, 9, 30, tzinfo=dt.UTC)
    safety_name = archive_name(service.settings.file_prefix, moment)
    (service.settings.backup_dir / f".{safety_name}.partial").write_bytes(b"")
    job = service.new_job("restore")
    with clock.set_to(moment), job_log() as tail, pytest.raises(JobFailed) as info:
        service.run_restore(
            job,
            file_name=sample_archive.entry["fileName"],
            drop=True,
            ns_include=two,
            ns_from="maekcord.*",
            ns_to=f"{target}.*",
        )
    assert str(info.value) == (
        f"the safety backup before the restore failed (cannot write {safety_name}: File exists); "
        'nothing was restored ("safetyBackup": false skips it)'
    )
    assert info.value.stage == "restore" and job.as_json()["failedStage"] == "restore"
    logged = [r["message"] for r in tail.query(job_id=job.id, text="safety backup of")]
    assert logged == [f"restore job {job.id}: safety backup of {target}.appointments, {target}.patients"]
    for ns in two:
        assert list(mongo_client[target][ns.split(".")[1]].find()) == [{"_id": "live"}]


def test_write_errors_are_counted_and_reported_never_swallowed(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    options = {"ns_include": ("maekcord.prescriptions",), "ns_from": "maekcord.*", "ns_to": f"{target}.*"}
    # an existing, empty collection whose validator refuses every document (a colliding restore is
    # refused before any write, see test_restore_collisions.py)
    mongo_client[target].create_collection("prescriptions", validator={"$jsonSchema": {"required": ["x!"]}})
    job = service.new_job("restore")
    with pytest.raises(
        JobFailed, match=r"finished with 2 failed write\(s\) \(0 of 2 documents written"
    ) as info:
        service.run_restore(job, file_name=sample_archive.entry["fileName"], safety_backup=False, **options)
    assert info.value.stage == "restore"
    assert job.state == "failed"
    assert job.result["errorCount"] == 2 and job.result["failedDocuments"] == 2
    assert job.result["documentsWritten"] == 0 and job.result["bytesWritten"] == 0
    assert {e["code"] for e in job.result["errors"]} == {121}
    assert all(e["namespace"] == f"{target}.prescriptions" and "_id" in e for e in job.result["errors"])


def test_a_restore_refuses_to_start_while_another_job_holds_the_lock(
    sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    holder = JobLock(service.settings.backup_dir)
    holder.acquire(Job("backup", "schedule"))
    try:
        with pytest.raises(JobBusy, match="another backup is running"):
            service.run_restore(latest=True, ns_from="maekcord.*", ns_to=f"{target}.*")
    finally:
        holder.release()
    assert not database_exists(mongo_client, target)


@pytest.mark.parametrize(
    ("ns_from", "ns_to", "message"),
    [
        (("maekcord.*", "analytics.*"), ("x.*",), "come in pairs"),
        (("maekcord.*",), ("x.*.*",), "same number of"),
        (("maekcord.*",), ("bad/name.*",), "contains '/'"),
        (("maekcord.patients", "maekcord.appointments"), ("{t}.x", "{t}.x"), "would both be restored as"),
    ],
)
def test_bad_renames_are_refused_before_any_write(
    ns_from, ns_to, message, sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    target = scratch_db()
    ns_to = tuple(t.format(t=target) for t in ns_to)
    with pytest.raises(JobFailed, match=message) as info:
        service.run_restore(latest=True, ns_from=ns_from, ns_to=ns_to)
    assert "nothing was written" in str(info.value)
    assert not database_exists(mongo_client, target)


def test_renamer_maps_wildcards_like_mongorestore():
    rename = Renamer(["maekcord.*", "a.b_*_*"], ["copy.*", "z.*-*"])
    assert rename("maekcord.records.archive") == "copy.records.archive"
    assert rename("a.b_1_2") == "z.1-2"
    assert rename("other.c") == "other.c"


def _oplog_archive(path, db: str, oplog_collection: str = "c") -> None:
    """A full-dump-like archive of collection c plus an oplog: the start entry, an insert and a delete
    in ``oplog_collection``."""
    ns = Namespace(db, "c")
    meta = build_metadata_json(
        "c",
        options=None,
        indexes=[{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
        uuid=None,
        type_="collection",
    )
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    oplog = Namespace("", "oplog")
    writer.write_prelude(
        ArchiveHeader("8.0.0", "test"),
        [CollectionMetadata(db, "c", meta), CollectionMetadata("", "oplog", "", type="")],
    )
    writer.write_documents(ns, bson.encode({"_id": 1}) + bson.encode({"_id": 2}))
    writer.end_namespace(ns)
    t = 1_700_000_000
    entries = [
        {"ts": Timestamp(t, 1), "op": "n", "ns": "", "o": {"msg": "dump started"}},
        {"ts": Timestamp(t, 2), "op": "i", "ns": f"{db}.{oplog_collection}", "o": {"_id": 3}},
        {"ts": Timestamp(t, 3), "op": "d", "ns": f"{db}.{oplog_collection}", "o": {"_id": 1}},
    ]
    writer.write_documents(oplog, b"".join(bson.encode(e) for e in entries))
    writer.end_namespace(oplog)
    write_gzip(path, out.getvalue())


def test_a_full_restore_replays_the_oplog_with_or_without_apply_ops(
    scratch_db, mongo_client, tmp_path, mongo_uri
):
    from sidecar.service import BackupService

    db = scratch_db()
    archive = tmp_path / "with-oplog.gz"
    _oplog_archive(archive, db)
    service = BackupService(settings_for(mongo_uri, tmp_path))
    dry = service.run_restore(file_name=str(archive), dry_run=True)
    assert dry["oplog"] == {  # the start entry is in the data: skipped, but counted and its ts not first
        "toApply": 2,
        "indexBuilds": 0,
        "skipped": 1,
        "entries": 3,
        "firstTs": "1700000000:2",
        "lastTs": "1700000000:3",
        "unsupported": [],
        "pendingTransactions": 0,
    }
    available = server_has_apply_ops(mongo_client)
    result = service.run_restore(file_name=str(archive))  # applyOps, or the native translation
    assert result["oplog"]["replay"]["applied"] == 2
    assert result["oplog"]["replay"]["method"] == ("applyOps" if available else "native")
    assert sorted(d["_id"] for d in mongo_client[db].c.find()) == [2, 3]
    assert result["postRestoreCheck"]["namespaces"][f"{db}.c"]["changedByOplogReplay"] is True
    mongo_client.drop_database(db)
    result = service.run_restore(file_name=str(archive), oplog_replay=False)
    assert "oplog" not in result or result["oplog"] is None
    assert sorted(d["_id"] for d in mongo_client[db].c.find()) == [1, 2]
    # a renamed (not full) restore never replays the oplog
    other = scratch_db()
    result = service.run_restore(file_name=str(archive), ns_from=f"{db}.*", ns_to=f"{other}.*")
    assert sorted(d["_id"] for d in mongo_client[other].c.find()) == [1, 2]


def test_a_full_restore_backs_up_first_what_its_data_and_its_oplog_overwrite(
    scratch_db, mongo_client, tmp_path, mongo_uri
):
    from sidecar.service import BackupService

    db = scratch_db()
    archive = tmp_path / "with-oplog.gz"
    _oplog_archive(archive, db, oplog_collection="d")  # the data: c; the oplog writes d
    mongo_client[db].c.insert_one({"_id": "live"})
    mongo_client[db].d.insert_one({"_id": "live"})
    service = BackupService(settings_for(mongo_uri, tmp_path))
    dry = service.run_restore(file_name=str(archive), drop=True, dry_run=True)
    assert dry["overwrites"] == [f"{db}.c", f"{db}.d"]
    assert dry["safetyBackup"] == {"wouldBackUp": [f"{db}.c", f"{db}.d"]}


def test_cli_restore(sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri, monkeypatch, capsys):
    service, _ = sample_archive.copy_into(tmp_path, mongo_uri)
    for key, value in {
        "SIDECAR_MONGODB_URI": mongo_uri,
        "SIDECAR_BACKUP_DIR": str(service.settings.backup_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
    }.items():
        monkeypatch.setenv(key, value)
    target = scratch_db()
    args = ["restore", "--latest", "--ns-include", "maekcord.prescriptions"]
    args += ["--ns-from", "maekcord.*", "--ns-to", f"{target}.*", "--quiet"]
    assert cli_main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"would restore maekcord.prescriptions -> {target}.prescriptions (collection, create): "
        "2 documents, indexes: _id_"
    )
    assert out[-1].endswith("nothing was written")
    assert not database_exists(mongo_client, target)
    assert cli_main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documentsWritten"] == 2 and report["postRestoreCheck"]["ok"] is True
    assert cli_main([*args]) == 1  # again, without --drop: the same _ids, refused before any write
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("sidecar: error: refusing to restore")
    with pytest.raises(SystemExit) as info:
        cli_main(["restore", "--ns-include", "x.y"])  # neither FILE nor --latest
    assert info.value.code == 2
    assert cli_main(["restore", "--latest", "--ns-from", "maekcord.*"]) == 2
