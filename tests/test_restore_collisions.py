"""The runbook's restore call on a live database: collisions found by the plan, refused before anything.

A restore without drop into collections that already hold the archive's _ids is refused before the
safety backup and before any write (the service, the CLI, and the API with 409 ``restore_conflict``);
the dry run reports the collisions and warns; ``drop`` (the runbook's recovery step) still restores;
an append the _ids prove disjoint still goes ahead. Each test backs up its own ``rt_<random>``
database and restores the runbook's way, whole archive, names unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import bson
import pymongo
import pytest
from aiohttp.test_utils import TestClient

from sidecar.api.app import Sidecar, create_app
from sidecar.cli import main as cli_main
from sidecar.engine.restore_plan import (
    ArchiveIds,
    RestoreOptions,
    TargetsInUse,
    find_collisions,
    inspect_targets,
    plan_restore,
)
from sidecar.integrity.scan import scan_archive
from sidecar.service import BackupService, JobFailed
from tests.helpers import settings_for
from tests.test_restore_support import scratch_db_fixture  # noqa: F401 - fixture

ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture
def live(scratch_db: Callable[[], str], mongo_client: pymongo.MongoClient, mongo_uri: str, tmp_path: Any):
    """A database with two collections in use, and a backup of exactly it (service, db name, file)."""
    db = scratch_db()
    mongo_client[db].patients.insert_many([{"_id": i, "name": f"p{i}"} for i in range(50)])
    mongo_client[db].notes.insert_one({"_id": "only", "text": "one note"})
    settings = settings_for(mongo_uri, tmp_path, ns_include=f"{db}.*", admin_token=ADMIN)
    service = BackupService(settings)
    entry = service.run_backup()
    return service, db, entry["fileName"]


def test_a_restore_without_drop_into_live_collections_is_refused_before_the_safety_backup(
    live: Any, mongo_client: pymongo.MongoClient
) -> None:
    service, db, name = live
    mongo_client[db].patients.insert_one({"_id": "added after the backup"})
    job = service.new_job("restore")
    with pytest.raises(JobFailed) as info:
        service.run_restore(job, file_name=name)
    message = str(info.value)
    assert isinstance(info.value.__cause__, TargetsInUse) and info.value.stage == "restore"
    assert f"{db}.patients (50 of the archive's 50 _ids)" in message
    assert f"{db}.notes (1 of the archive's 1 _ids)" in message
    assert "2 target collections" in message and "Nothing was written, no safety backup was taken" in message
    assert '"drop": true' in message and '"nsFrom"/"nsTo"' in message
    assert "\n" not in message
    assert [e["fileName"] for e in service.catalog.load()] == [name]  # no safety backup
    assert "documentsWritten" not in job.result
    assert mongo_client[db].patients.count_documents({}) == 51  # nothing written
    assert {c["target"]: c["collidingIds"] for c in job.result["collisions"]} == {
        f"{db}.patients": 50,
        f"{db}.notes": 1,
    }


def test_the_dry_run_reports_the_collisions_and_warns(live: Any, mongo_client: pymongo.MongoClient) -> None:
    service, db, name = live
    result = service.run_restore(file_name=name, dry_run=True)
    patients = next(c for c in result["collisions"] if c["target"] == f"{db}.patients")
    assert patients == {
        "target": f"{db}.patients",
        "existingDocuments": 50,
        "archiveDocuments": 50,
        "collidingIds": 50,
        "comparedIds": 50,
        "allCompared": True,
        "refused": True,
    }
    (warning,) = result["warnings"]
    assert warning.startswith("the restore (not a dry run) would be refused: 2 target collections")
    # with drop, the plan replaces them: no collision, no warning
    dropped = service.run_restore(file_name=name, dry_run=True, drop=True)
    assert dropped["collisions"] == [] and "warnings" not in dropped
    assert {ns["action"] for ns in dropped["namespaces"]} == {"replace"}


def test_drop_is_the_recovery_step_with_a_safety_backup_first(
    live: Any, mongo_client: pymongo.MongoClient
) -> None:
    service, db, name = live
    mongo_client[db].patients.delete_many({"_id": {"$lt": 10}})
    result = service.run_restore(file_name=name, drop=True)
    assert result["safetyBackup"] and result["postRestoreCheck"]["ok"] is True
    assert result["documentsWritten"] == 51 and result["errorCount"] == 0
    assert mongo_client[db].patients.count_documents({}) == 50


def test_an_append_of_disjoint_ids_still_goes_ahead(live: Any, mongo_client: pymongo.MongoClient) -> None:
    service, db, name = live
    mongo_client[db].notes.delete_many({})
    mongo_client[db].notes.insert_one({"_id": "someone else's"})
    result = service.run_restore(file_name=name, ns_include=(f"{db}.notes",), safety_backup=False)
    assert result["collisions"] == [
        {
            "target": f"{db}.notes",
            "existingDocuments": 1,
            "archiveDocuments": 1,
            "collidingIds": 0,
            "comparedIds": 1,
            "allCompared": True,
            "refused": False,
        }
    ]
    assert result["documentsWritten"] == 1 and mongo_client[db].notes.count_documents({}) == 2
    assert result["safetyBackupSkipped"] == 'opted out ("safetyBackup": false)'


def test_one_colliding_target_refuses_the_restore_though_another_is_disjoint(
    live: Any, mongo_client: pymongo.MongoClient
) -> None:
    """A disjoint append beside a collision: the one collision is enough, and only it is named."""
    service, db, name = live
    mongo_client[db].notes.delete_many({})
    mongo_client[db].notes.insert_one({"_id": "someone else's"})  # disjoint from the archive's
    job = service.new_job("restore")
    with pytest.raises(JobFailed) as info:
        service.run_restore(job, file_name=name, safety_backup=False)
    message = str(info.value)
    assert isinstance(info.value.__cause__, TargetsInUse)
    assert "1 target collection holds documents with the archive's _ids already" in message
    assert f"{db}.patients (50 of the archive's 50 _ids)" in message and f"{db}.notes" not in message
    assert {c["target"]: c["refused"] for c in job.result["collisions"]} == {
        f"{db}.patients": True,
        f"{db}.notes": False,
    }
    assert mongo_client[db].notes.count_documents({}) == 1  # nothing written, not even the disjoint one
    assert mongo_client[db].patients.count_documents({}) == 50


def test_ids_past_the_limit_are_not_compared_and_the_restore_is_refused_saying_so(
    live: Any, mongo_client: pymongo.MongoClient
) -> None:
    service, db, name = live
    path = service.settings.backup_dir / name
    only_patients = RestoreOptions(ns_include=(f"{db}.patients",))
    ids = ArchiveIds(only_patients, limit=20)
    scan = scan_archive(path, on_chunk=ids.feed)
    assert ids.kept == 20 and not ids.complete(f"{db}.patients")
    assert list(ids.ids) == [f"{db}.patients"]  # the notes are not restored: none of their _ids kept
    assert scan.prelude is not None
    plan = plan_restore(scan.prelude, scan.counts(), only_patients)
    inspect_targets(mongo_client, plan, drop=False)
    (collision,) = find_collisions(mongo_client, plan, ids, drop=False)
    assert collision.refused and not collision.all_compared
    assert (
        collision.describe()
        == f"{db}.patients (20 of the first 20 of the archive's 50 _ids; the rest not compared)"
    )
    # with the default limit every document of this archive is compared
    everything = ArchiveIds()
    scan_archive(path, on_chunk=everything.feed)
    assert everything.complete(f"{db}.patients") and everything.complete(f"{db}.notes")


def test_the_cli_gives_the_same_refusal_in_one_line_with_its_flags(
    live: Any, mongo_client: pymongo.MongoClient, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    service, db, name = live
    s = service.settings
    for key, value in {
        "SIDECAR_MONGODB_URI": s.mongodb_uri,
        "SIDECAR_BACKUP_DIR": str(s.backup_dir),
        "SIDECAR_LOG_DIR": str(s.log_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli_main(["restore", name, "--quiet", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "warning: the restore (not a dry run) would be refused" in out and "--drop" in out
    assert cli_main(["restore", name, "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidecar: error: refusing to restore without drop: ")
    assert "--drop" in err[0] and "--ns-from/--ns-to" in err[0] and '"drop"' not in err[0]
    assert [e["fileName"] for e in service.catalog.load()] == [name]
    # one document is "1 document"; an opted-out safety backup names the CLI's flag
    notes = ["restore", name, "--quiet", "--drop", "--ns-include", f"{db}.notes"]
    assert cli_main([*notes, "--dry-run"]) == 0
    assert (
        f"would restore {db}.notes -> {db}.notes (collection, replace): 1 document, "
        in capsys.readouterr().out
    )
    assert cli_main([*notes, "--no-safety-backup"]) == 0
    assert "restore completed: " in capsys.readouterr().out
    assert cli_main([*notes, "--no-safety-backup", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["safetyBackupSkipped"] == "opted out (--no-safety-backup)"


@pytest.fixture
async def api(aiohttp_client: Any, live: Any) -> TestClient:
    service, _, _ = live
    return await aiohttp_client(create_app(Sidecar(service.settings)))


async def test_the_runbooks_api_call_is_409_naming_the_collections(
    api: TestClient, live: Any, mongo_client: pymongo.MongoClient
) -> None:
    service, db, name = live
    headers = {"Authorization": f"Bearer {ADMIN}"}
    resp = await api.post("/api/backup/restore?wait=true", json={"fileName": name}, headers=headers)
    assert resp.status == 409, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "restore_conflict"
    assert f"{db}.patients" in error["message"] and '"drop": true' in error["message"]
    assert "--drop" not in error["message"]
    assert {c["target"] for c in error["collisions"]} == {f"{db}.patients", f"{db}.notes"}
    assert error["job"]["state"] == "failed" and error["job"]["result"]["collisions"]
    # the runbook's call as written (no ?wait): the same 409, since 202 comes only once the writes begin
    resp = await api.post("/api/backup/restore", json={"fileName": name}, headers=headers)
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "restore_conflict"
    assert [e["fileName"] for e in service.catalog.load()] == [name]  # no safety backup, twice
    # the recovery step the docs give, also as the runbook writes it: 202 with the job, which succeeds
    resp = await api.post("/api/backup/restore", json={"fileName": name, "drop": True}, headers=headers)
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["job"]["id"]
    for _ in range(300):
        job = (await (await api.get(f"/api/backup/jobs/{job_id}", headers=headers)).json())["job"]
        if job["state"] != "running":
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "succeeded", job
    report = job["result"]
    assert report["safetyBackup"] and report["documentsWritten"] == 51
    # an opted-out safety backup names the API's field
    body = {"fileName": name, "drop": True, "safetyBackup": False}
    resp = await api.post("/api/backup/restore?wait=true", json=body, headers=headers)
    assert (await resp.json())["restore"]["safetyBackupSkipped"] == 'opted out ("safetyBackup": false)'


def test_a_restore_that_fails_part_way_reports_counts_that_agree(
    live: Any, mongo_client: pymongo.MongoClient
) -> None:
    service, db, name = live
    sizes = {d["_id"]: len(bson.encode(d)) for d in mongo_client[db].patients.find()}
    target = f"{db}_copy"
    # an empty collection that takes only the documents with _id < 10: 10 written, 40 refused
    mongo_client[target].create_collection("patients", validator={"_id": {"$lt": 10}})
    try:
        job = service.new_job("restore")
        with pytest.raises(JobFailed, match=r"40 failed write\(s\) \(10 of 50 documents written"):
            service.run_restore(
                job,
                file_name=name,
                ns_include=(f"{db}.patients",),
                ns_from=(f"{db}.*",),
                ns_to=(f"{target}.*",),
            )
        assert job.result["documentsWritten"] == 10 and job.result["failedDocuments"] == 40
        assert job.result["bytesWritten"] == sum(size for i, size in sizes.items() if i < 10)
        (item,) = job.result["namespaces"]
        assert item["inserted"] == 10 and item["failed"] == 40
    finally:
        mongo_client.drop_database(target)
