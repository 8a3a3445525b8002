"""Integrity level pitr against a real server: base backup N-1 carried by the archived oplog to base
backup N's point reproduces N; a slice altered consistently (re-compressed with one entry changed, its
sha256 and size in the catalog updated to match) is caught by the content comparison and named."""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.son import SON

from sidecar.api.app import Sidecar, create_app
from sidecar.cli import main as cli_main
from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.integrity.drill import DRILL_PREFIX
from sidecar.integrity.failure import VerifyFailed
from sidecar.integrity.pitr import PitrCheck
from sidecar.integrity.proof_server import given_server
from sidecar.integrity.scratch import compare_facts
from sidecar.pitr.planning.pair import BasePair, BrokenChain, joined_pair
from sidecar.pitr.record.catalog import SLICES_NAME, SliceCatalog
from sidecar.pitr.record.slices import oplog_dir, read_entries
from sidecar.pitr.status import pitr_status
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import Catalog, is_usable
from sidecar.store.objects import Digest
from tests.helpers import discard, settings_for
from tests.pitr_support import archiving, wait_until_stored

DB = "pverify"
TAMPERED_ID = "p-tamper"
ORDERED = CodecOptions(document_class=SON)


@pytest.fixture(scope="module")
def chain_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real mongod when SIDECAR_TEST_MONGODB_URI names one, else a fresh embedded server (its oplog
    stays small: every embedded oplog query scans the whole oplog)."""
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    if given:
        yield given
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("pverify") / "data").start()
    try:
        yield server.uri
    finally:
        discard(server)


def _writes(client: pymongo.MongoClient) -> None:
    """Inserts, $set/$push/$unset updates (one path, and several new fields through several operators,
    listed in MongoDB's order: docs/pitr-replay.md, Limits), a replace, deletes, a transaction across
    two collections, an index."""
    patients, visits = client[DB].patients, client[DB].visits
    patients.insert_many([{"_id": f"p{n}", "n": n, "tags": []} for n in range(30)])
    patients.insert_one({"_id": TAMPERED_ID, "name": "lee", "n": 99})
    patients.update_one({"_id": "p1"}, {"$set": {"name": "kim"}})
    patients.update_one({"_id": "p2"}, {"$push": {"tags": "a"}})
    patients.update_one({"_id": "p3"}, {"$unset": {"tags": ""}})
    patients.update_one(
        {"_id": "p6"}, {"$inc": {"9": 1, "10": 1}, "$set": {"flag": "young"}, "$push": {"zz": 1}}
    )
    patients.update_one({"_id": "p7"}, {"$set": {"a": 1}, "$rename": {"n": "number"}, "$unset": {"tags": ""}})
    patients.replace_one({"_id": "p4"}, {"n": 4, "replaced": True})
    patients.delete_one({"_id": "p5"})
    patients.delete_many({"n": {"$gte": 25, "$lt": 30}})
    with client.start_session() as session, session.start_transaction():
        patients.insert_one({"_id": "ptx", "n": 100}, session=session)
        visits.insert_one({"_id": "vtx", "patient": "ptx"}, session=session)
    patients.create_index("n")


@pytest.fixture(scope="module")
def chain(chain_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Two base backups joined by the oplog archive, with writes before, between and after them."""
    settings = settings_for(
        chain_uri,
        tmp_path_factory.mktemp("chain"),
        pitr="auto",
        pitr_slice_seconds=0.3,
        pitr_slice_max_bytes=2048,
        verify_after_backup="off",
    )
    service = BackupService(settings)
    with pymongo.MongoClient(chain_uri) as client:
        client.drop_database(DB)
        client[DB].patients.insert_many([{"_id": f"b{n}", "n": -n} for n in range(10)])
        with archiving(settings):
            assert service.run_backup()["oplog"], "a base backup on a replica set records its oplog cut"
            _writes(client)
            wait_until_stored(settings, client)
            assert service.run_backup()["oplog"]
            client[DB].patients.insert_one({"_id": "after-n", "n": 1000})  # past N: the cut leaves it out
            wait_until_stored(settings, client)
    return settings


def _copy(settings: Settings, tmp_path: Path) -> Settings:
    """The chain in a directory of the test's own (a test may alter it)."""
    shutil.copytree(settings.backup_dir, tmp_path / "backups")
    return settings.replace(backup_dir=tmp_path / "backups", log_dir=tmp_path / "logs")


def _use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name, value in (
        ("MONGODB_URI", settings.mongodb_uri),
        ("BACKUP_DIR", str(settings.backup_dir)),
        ("LOG_DIR", str(settings.log_dir)),
        ("MIN_FREE_BYTES", "0"),
        ("PITR", "off"),
    ):
        monkeypatch.setenv(f"SIDECAR_{name}", value)


def _scratch_left(settings: Settings) -> list[str]:
    with pymongo.MongoClient(settings.mongodb_uri) as client:
        return [n for n in client.list_database_names() if n.startswith(DRILL_PREFIX)]


def test_verify_level_pitr_passes_on_a_healthy_chain(chain, tmp_path, monkeypatch, capsys):
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert not isinstance(pair, str), pair
    _use(monkeypatch, settings)
    assert cli_main(["verify", "--level", "pitr", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"pitr verification passed: {pair.older} + " in out and f"reproduce {pair.newer}" in out
    assert "s on the embedded server (" in out and " written))" in out
    entries = {e["fileName"]: e for e in BackupService(settings).list_backups()}
    result = entries[pair.newer]["verification"]["pitr"]
    assert result["ok"] and result["pair"]["older"] == pair.older
    assert result["replay"]["transactions"] >= 1 and result["replay"]["operations"] > 30
    assert "lastVerification" not in entries[pair.newer]  # the pitr level never decides usability
    assert SliceCatalog(oplog_dir(settings)).load()["verification"]["pitr"]["ok"] is True
    assert _scratch_left(settings) == []


def _rename_patient(document: SON) -> SON:
    document["name"] = "park"
    return document


def _reorder(document: SON) -> SON:
    return SON([("_id", document["_id"]), *reversed([(k, v) for k, v in document.items() if k != "_id"])])


def _alter_insert(settings: Settings, change: Callable[[SON], SON] = _rename_patient) -> str:
    """Re-compress the slice holding the insert of TAMPERED_ID with ``change`` made to its document,
    and update its sha256, size and raw bytes in the slice catalog: only the content can tell."""
    directory = oplog_dir(settings)
    catalog = SliceCatalog(directory)
    document = catalog.load()
    for item in document["slices"]:
        entries = read_entries(settings, directory / item["fileName"])
        for index, raw in enumerate(entries):
            entry = bson.decode(raw, ORDERED)
            if entry.get("op") == "i" and entry["o"].get("_id") == TAMPERED_ID:
                entry["o"] = change(entry["o"])
                entries[index] = bson.encode(entry)
                data = gzip.compress(b"".join(entries))
                (directory / item["fileName"]).write_bytes(data)
                digest = Digest()
                digest.update(data)
                raw_bytes = sum(map(len, entries))
                catalog.set_fields(
                    item["fileName"], sha256=digest.hexdigest(), sizeBytes=len(data), rawBytes=raw_bytes
                )
                return item["fileName"]
    raise AssertionError(f"no slice holds the insert of {TAMPERED_ID}")


def test_verify_level_pitr_fails_naming_a_slice_altered_with_a_matching_sha256(
    chain, tmp_path, monkeypatch, capsys
):
    settings = _copy(chain, tmp_path)
    altered = _alter_insert(settings)
    pair = joined_pair(settings)
    assert not isinstance(pair, str) and altered in [s["fileName"] for s in pair.slices]
    _use(monkeypatch, settings)
    assert cli_main(["verify", "--level", "pitr", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert altered in error and f"{DB}.patients: the content hash of its documents differs" in error
    assert "another order" not in error
    entry = next(e for e in BackupService(settings).list_backups() if e["fileName"] == pair.newer)
    result = entry["verification"]["pitr"]
    assert not result["ok"] and result["failedCheck"] == "pitr"
    # the one entry of that slice that wrote the differing document
    assert result["suspectSlices"] == {altered: 1}
    assert result["differingIds"] == {f"{DB}.patients": [TAMPERED_ID]}
    assert is_usable(entry)  # the slices are bad, not base N
    recorded = SliceCatalog(oplog_dir(settings)).load()["verification"]["pitr"]
    assert recorded["ok"] is False and recorded["suspectSlices"] == {altered: 1}
    shown = pitr_status(settings, server="not asked")["verification"]["pitr"]
    assert shown["newer"] == pair.newer and altered in shown["reason"]
    assert _scratch_left(settings) == []


def test_a_slice_whose_bytes_differ_from_its_catalog_fails_before_any_comparison(chain, tmp_path):
    """Same size, same entries, another sha256 (the gzip header's mtime): the read check names it."""
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert not isinstance(pair, str)
    victim = oplog_dir(settings) / pair.slices[-1]["fileName"]
    data = bytearray(victim.read_bytes())
    data[4:8] = (int.from_bytes(data[4:8], "little") ^ 1).to_bytes(4, "little")
    victim.write_bytes(bytes(data))
    with pytest.raises(JobFailed, match=f"{victim.name}: its sha256 is [0-9a-f]{{64}}, the catalog says"):
        BackupService(settings).run_pitr_verify()
    entry = next(e for e in BackupService(settings).list_backups() if e["fileName"] == pair.newer)
    assert entry["verification"]["pitr"]["failedCheck"] == "slice"
    assert entry["verification"]["pitr"]["slice"] == victim.name
    assert _scratch_left(settings) == []


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (
            lambda path: path.write_bytes(path.read_bytes() + b"\0"),
            r"slice-damaged: (\d+) bytes, the catalog says",
        ),
        (lambda path: path.unlink(), "slice-missing"),
    ],
    ids=["another-size", "missing"],
)
def test_a_broken_chain_fails_the_check_naming_the_slice_and_the_cause(
    chain, tmp_path, monkeypatch, capsys, damage, cause
):
    """A CronJob running the check must fail: exit 1, the slice and why, recorded like any verdict."""
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert isinstance(pair, BasePair)
    victim = oplog_dir(settings) / pair.slices[len(pair.slices) // 2]["fileName"]
    damage(victim)
    _use(monkeypatch, settings)
    assert cli_main(["verify", "--level", "pitr"]) == 1
    err = capsys.readouterr().err
    assert f"does not join base backup {pair.older} to {pair.newer}: {victim.name}: " in err
    assert re.search(cause, err), err
    entry = next(e for e in BackupService(settings).list_backups() if e["fileName"] == pair.newer)
    record = entry["verification"]["pitr"]
    assert record["ok"] is False and record["failedCheck"] == "pitr-chain"
    assert record["slice"] == victim.name and record["brokenSlices"] == [victim.name]
    assert [g["files"] for g in record["gaps"]] == [[victim.name]]
    assert SliceCatalog(oplog_dir(settings)).load()["verification"]["pitr"]["slice"] == victim.name
    assert _scratch_left(settings) == []


def test_a_chain_break_between_the_bases_fails_the_check_with_its_times(chain, tmp_path):
    """A slice that does not follow the one before it (its prev moved): a break, named with its times."""
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert isinstance(pair, BasePair) and len(pair.slices) >= 2
    catalog = oplog_dir(settings) / SLICES_NAME
    moved = pair.slices[1]["fileName"]
    lines = []
    for line in catalog.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["op"] == "slice" and record["slice"]["fileName"] == moved:
            prev = record["slice"]["prev"]
            record["slice"]["prev"] = {"t": prev["t"], "i": prev["i"] + 1000}
        lines.append(json.dumps(record))
    rewritten = catalog.with_name("rewritten")
    rewritten.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rewritten.replace(catalog)  # a new file, as the catalog's own rewrites are
    broken = joined_pair(settings)
    assert isinstance(broken, BrokenChain) and broken.files == []
    with pytest.raises(
        JobFailed, match=r"does not join base backup .*: chain-break from \S+ to \S+ \(this slice"
    ):
        BackupService(settings).run_pitr_verify()


def test_without_two_joined_base_backups_the_level_is_skipped_and_says_why(
    chain, tmp_path, monkeypatch, capsys
):
    settings = _copy(chain, tmp_path)
    (oplog_dir(settings) / SLICES_NAME).write_text("", encoding="utf-8")  # a catalog that holds nothing
    _use(monkeypatch, settings)
    assert cli_main(["verify", "--level", "pitr"]) == 0
    assert (
        "pitr verification skipped: the pitr check needs two usable base backups within the oplog archive, "
        "which holds no slices: 0 of the 2 lie in it"
    ) in capsys.readouterr().out
    assert cli_main(["verify", "--level", "pitr", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)  # where a verdict would be: skipped and why, no nulls
    assert shown["verification"] == {"pitr": {"skipped": shown["skipped"]}} and None not in shown.values()
    empty = settings.replace(backup_dir=tmp_path / "empty")
    assert "the catalog holds none" in BackupService(empty).run_pitr_verify()["skipped"]
    assert cli_main(["verify", "--level", "pitr", "some.gz"]) == 2
    assert "no FILE" in capsys.readouterr().err


async def test_post_backup_test_level_pitr_runs_the_check_and_refuses_a_file_name(
    chain, tmp_path, aiohttp_client
):
    settings = _copy(chain, tmp_path).replace(admin_token="admin-token-for-tests-0123456789", pitr="off")
    sidecar = Sidecar(settings)
    client = await aiohttp_client(create_app(sidecar))
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    resp = await client.post("/api/backup/test", json={"level": "pitr", "fileName": "x.gz"}, headers=headers)
    assert resp.status == 400 and "no fileName" in (await resp.json())["error"]["message"]
    resp = await client.post("/api/backup/test?wait=true", json={"level": "pitr"}, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    pair = joined_pair(settings)
    assert body["job"]["params"] == {"level": "pitr", "fileName": pair.newer}
    assert body["verification"]["ok"] is True and body["verification"]["fileName"] == pair.newer
    metrics = await (await client.get("/metrics")).text()
    assert 'mongobackup_verify_last_success{level="pitr"} 1.0' in metrics
    assert 'mongobackup_verify_runs_total{level="pitr"} 1.0' in metrics


async def test_the_scheduled_pitr_check_runs_weekly_beside_the_drill_and_records_its_verdict(chain, tmp_path):
    settings = _copy(chain, tmp_path).replace(admin_token="admin-token-for-tests-0123456789", pitr="off")
    assert settings.pitr_verify_schedule == "0 5 * * 0"  # Sundays 05:00, an hour after the drill
    sidecar = Sidecar(settings)
    await sidecar.start()
    try:
        status = sidecar.scheduler.status()["pitrVerify"]
        assert status["schedule"] == "0 5 * * 0" and status["nextRun"]
        await sidecar.scheduler.scheduled_pitr_verify()
    finally:
        await sidecar.stop(grace=5)
    (job,) = [j for j in sidecar.service.jobs.values() if j.params.get("level") == "pitr"]
    assert job.trigger == "schedule" and job.state == "succeeded"
    entry = next(e for e in sidecar.service.list_backups() if e["fileName"] == job.params["fileName"])
    assert entry["verification"]["pitr"]["ok"] is True


def test_a_base_backup_that_cannot_be_read_fails_as_that_base_not_as_the_slices(chain, tmp_path):
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert not isinstance(pair, str)
    (settings.backup_dir / pair.older).unlink()
    with pytest.raises(JobFailed, match=f"base backup {pair.older}: .* does not exist"):
        BackupService(settings).run_pitr_verify()
    entry = next(e for e in BackupService(settings).list_backups() if e["fileName"] == pair.newer)
    assert entry["verification"]["pitr"]["failedCheck"] == "pitr-base"
    assert "suspectSlices" not in entry["verification"]["pitr"]


def test_the_replayed_set_and_the_next_base_are_compared_fact_by_fact():
    """What the pitr level reports for each kind of difference (views have no documents to count)."""
    coll = {"type": "collection", "options": {}, "documents": 2, "hash": 7, "indexes": {"_id_": {"k": 1}}}
    view = {"type": "view", "options": {"viewOn": "c"}}
    replayed = {
        "d.same": coll,
        "d.count": {**coll, "documents": 3, "hash": 8},
        "d.hash": {**coll, "hash": 8},
        "d.index": {**coll, "indexes": {}},
        "d.options": {**coll, "options": {"capped": True}},
        "d.view": view,
        "d.became": view,
        "d.was": coll,
        "d.replayed": coll,
    }
    restored = {ns: coll for ns in ("d.same", "d.count", "d.hash", "d.index", "d.options", "d.became")}
    assert compare_facts(replayed, {**restored, "d.view": view, "d.was": view, "d.base": coll}) == {
        "d.base": ["d.base: exists in the base only"],
        "d.became": ["d.became: view {'viewOn': 'c'} after the replay, collection {} in the base"],
        "d.count": ["d.count: 3 documents after the replay, 2 in the base"],
        "d.hash": ["d.hash: the content hash of its documents differs"],
        "d.index": ["d.index: index _id_ is missing after the replay"],
        "d.options": ["d.options: collection {'capped': True} after the replay, collection {} in the base"],
        "d.replayed": ["d.replayed: exists after the replay only"],
        "d.was": ["d.was: collection {} after the replay, view {'viewOn': 'c'} in the base"],
    }


def test_a_base_backup_gone_from_the_catalog_since_the_pairing_fails_as_that_base(chain, tmp_path):
    """Removed between the pairing and its restore (a prune in another process): pitr-base, named."""
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert not isinstance(pair, str)

    def forget(entries: list[dict]) -> None:
        entries[:] = [e for e in entries if e["fileName"] != pair.older]

    Catalog(settings.backup_dir).update(forget)
    with given_server(settings.mongodb_uri) as server, pytest.raises(VerifyFailed) as info:
        PitrCheck(settings, server.client, pair, "gone").run()
    assert (info.value.reason, info.value.check) == (
        f"base backup {pair.older} is no longer in the catalog",
        "pitr-base",
    )
    assert _scratch_left(settings) == []


@pytest.mark.parametrize(
    ("field", "said"),
    [
        ("sha256", "sha256 is [0-9a-f]{64}, the catalog recorded 0{64}"),
        ("sizeBytes", r"the file is \d+ bytes, the catalog recorded \d+"),
    ],
)
def test_a_base_whose_bytes_are_not_the_catalogs_fails_as_that_base(chain, tmp_path, field, said):
    """The base reads through and decodes, but its sha256 or size is not what the catalog recorded:
    not the bytes that were backed up, so the proof stops there (pitr-base), before any replay."""
    settings = _copy(chain, tmp_path)
    pair = joined_pair(settings)
    assert not isinstance(pair, str)
    service = BackupService(settings)
    recorded = service.catalog.get(pair.older)
    service.catalog.patch(pair.older, **{field: "0" * 64 if field == "sha256" else recorded[field] + 1})
    with pytest.raises(JobFailed, match=f"base backup {pair.older} fails its full check: .*{said}"):
        service.run_pitr_verify()
    entry = next(e for e in BackupService(settings).list_backups() if e["fileName"] == pair.newer)
    assert entry["verification"]["pitr"]["failedCheck"] == "pitr-base"


def test_a_document_that_differs_only_in_field_order_says_so(chain, tmp_path):
    settings = _copy(chain, tmp_path)
    altered = _alter_insert(settings, _reorder)
    with pytest.raises(
        JobFailed, match=f"written by slice\\(s\\) {altered} \\(the same fields and values in another order"
    ):
        BackupService(settings).run_pitr_verify()


def test_the_check_and_the_restore_share_one_input_builder_and_one_planner():
    """integrity/pitr.py (the check) and service/point.py (the restore) read slices, the base's oplog
    and plan the replay only through PointInput: neither reads a slice, spools an oplog or calls the
    engine itself (a second copy of the pipeline would let the check prove something else)."""
    own = {"read_entries", "iter_entries", "plan_replay", "replay", "OplogSpool", "ArchiveOplog"}
    for module in ("sidecar/integrity/pitr.py", "sidecar/service/point.py"):
        tree = ast.parse((Path(__file__).parents[1] / module).read_text(encoding="utf-8"))
        imported = {
            (node.module, alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert ("sidecar.pitr.planning.point_input", "PointInput") in imported, module
        assert not {name for _, name in imported} & own, module
