"""Where restore proofs run (integrity/proof_server.py) and what the oplog archive keeps of them.

By default a drill and a pitr check of the sample data run on a throwaway embedded server: the
backed-up server's oplog gets no entry from them and the archive no slice. By opt-in
(``SIDECAR_DRILL_MONGODB_URI=source``) they run on the backed-up server, with a warning naming the
volume, and the archiver leaves their entries out (counted). A drill URI of the backed-up deployment
is refused; so is a proof that would not fit the disk.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator

import bson
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import ConfigError, Settings
from sidecar.embedded import EmbeddedServer
from sidecar.engine.scratch_names import SCRATCH_PREFIX, is_scratch_entry
from sidecar.integrity.failure import SERVER_CHECK, VerifyFailed
from sidecar.integrity.proof_server import ServerIdentity, embedded_server, identity, server_free_bytes
from sidecar.pitr.planning.pair import joined_pair
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from sidecar.pitr.status import pitr_status
from sidecar.sampledata import load_sample_data
from sidecar.service import BackupService, JobFailed
from sidecar.store.summary import summarize_catalog
from sidecar.text import human_size
from tests.helpers import discard, settings_for
from tests.pitr_support import archived, archiving, wait_until_stored

APP = "proofapp"


@pytest.fixture(scope="module")
def source_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The backed-up server: a real mongod when SIDECAR_TEST_MONGODB_URI names one, else a fresh
    embedded one (its oplog stays small)."""
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    if given:
        yield given
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("proof-source") / "data").start()
    try:
        yield server.uri
    finally:
        discard(server)


@pytest.fixture(scope="module")
def two_bases(source_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The sample data, two base backups and the archive that joins them."""
    settings = settings_for(
        source_uri,
        tmp_path_factory.mktemp("proofs"),
        pitr="auto",
        pitr_slice_seconds=0.3,
        verify_after_backup="off",
    )
    service = BackupService(settings)
    with pymongo.MongoClient(source_uri) as client, archiving(settings):
        client.drop_database(APP)
        load_sample_data(client)
        assert service.run_backup()["oplog"]
        client[APP].visits.insert_many([{"n": n} for n in range(50)])
        client.maekcord.patients.update_many({}, {"$set": {"seen": True}})
        wait_until_stored(settings, client)
        assert service.run_backup()["oplog"]
        wait_until_stored(settings, client)
    assert not isinstance(joined_pair(settings), str)
    return settings


def _app_entries(client: pymongo.MongoClient) -> int:
    """The server's oplog entries but mongod's periodic no-ops."""
    return client.local["oplog.rs"].count_documents({"op": {"$ne": "n"}})


def _proofs(settings: Settings) -> tuple[dict, dict, int]:
    """A drill of the newest backup and a pitr check, with the archiver running; then one write of
    the application, stored, so that the archive has read past everything the proofs did. The
    records, and how many entries the archiver left out (its counter, a metric)."""
    service = BackupService(settings)
    with pymongo.MongoClient(settings.mongodb_uri) as client, archiving(settings) as runner:
        drill = service.run_verify(latest=True, level="drill")["verification"]["drill"]
        pitr = service.run_pitr_verify()["verification"]["pitr"]
        client[APP].marker.insert_one({"after": "the proofs"})
        wait_until_stored(settings, client)
    proofs = summarize_catalog(service.list_backups()).proofs  # what /metrics and the status show
    assert proofs["drill"]["server"] == drill["server"] and proofs["pitr"]["server"] == pitr["server"]
    assert proofs["pitr"]["writtenBytes"] == pitr["writtenBytes"]
    return drill, pitr, runner.state.left_out


def _scratch_in_archive(settings: Settings) -> list[str]:
    return [str(e["ns"]) for e in map(RawBSONDocument, archived(settings)) if is_scratch_entry(e)]


def test_by_default_proofs_write_nothing_to_the_backed_up_server_or_the_archive(two_bases):
    catalog = SliceCatalog(oplog_dir(two_bases))
    before = {s["fileName"] for s in catalog.slices()}
    with pymongo.MongoClient(two_bases.mongodb_uri) as client:
        entries_before = _app_entries(client)
        drill, pitr, left_out = _proofs(two_bases)
        assert _app_entries(client) == entries_before + 1  # the marker, nothing of the proofs
        assert not [n for n in client.list_database_names() if n.startswith(SCRATCH_PREFIX)]
    assert drill["ok"] and pitr["ok"], (drill.get("reason"), pitr.get("reason"))
    assert drill["server"] == pitr["server"] == "embedded" and left_out == 0
    assert drill["writtenBytes"] > 2 * 1024 * 1024 and pitr["writtenBytes"] > drill["writtenBytes"]
    added = [s for s in catalog.slices() if s["fileName"] not in before]
    written = [{ns: n for ns, n in s["namespaces"].items() if ns} for s in added]  # "": mongod's no-ops
    assert [w for w in written if w] == [{f"{APP}.marker": 1}]
    assert list(two_bases.drill_directory.iterdir()) == []
    recorded = SliceCatalog(oplog_dir(two_bases)).load()["verification"]["pitr"]
    assert recorded["server"] == "embedded" and recorded["writtenBytes"] == pitr["writtenBytes"]


def test_proofs_on_the_backed_up_server_by_opt_in_warn_and_stay_out_of_the_archive(two_bases, caplog):
    settings = two_bases.replace(drill_mongodb_uri="source", drill_allow_unknown_disk=True)
    with pymongo.MongoClient(settings.mongodb_uri) as client:
        entries_before = _app_entries(client)
        with caplog.at_level(logging.WARNING, logger="sidecar.integrity"):
            drill, pitr, left_out = _proofs(settings)
        written = _app_entries(client) - entries_before - 1
    assert drill["ok"] and pitr["ok"], (drill.get("reason"), pitr.get("reason"))
    assert drill["server"] == pitr["server"] == "source"
    assert written > 1000, "the proofs wrote into the backed-up server's oplog"
    warnings = [m for r in caplog.records if "SIDECAR_DRILL_MONGODB_URI=source" in (m := r.getMessage())]
    assert len(warnings) == 2 and f"about {human_size(drill['expectedBytes'])} into scratch" in warnings[0]
    assert drill["serverWarnings"] == warnings[:1]
    assert _scratch_in_archive(settings) == []
    status = pitr_status(settings)
    # all of them (the embedded server); mongod logs some of a replay's writes as applyOps batches
    assert status["slices"]["leftOutEntries"] == left_out >= written * 0.9


def test_a_drill_uri_of_the_backed_up_deployment_is_refused(two_bases):
    spelled = two_bases.mongodb_uri.replace("127.0.0.1", "localhost")
    settings = two_bases.replace(drill_mongodb_uri=spelled)
    with pytest.raises(JobFailed, match="points at the backed-up deployment") as info:
        BackupService(settings).run_verify(latest=True, level="drill")
    assert "'source'" in str(info.value)
    with pymongo.MongoClient(two_bases.mongodb_uri) as client:
        assert not [n for n in client.list_database_names() if n.startswith(SCRATCH_PREFIX)]


def test_the_opt_in_is_refused_when_the_server_does_not_report_its_free_disk(two_bases):
    with pymongo.MongoClient(two_bases.mongodb_uri) as client:
        if server_free_bytes(client) is not None:
            pytest.skip("this server reports its free disk (dbStats fsTotalSize)")
    settings = two_bases.replace(drill_mongodb_uri="source")
    with pytest.raises(JobFailed, match=r"does not report its free disk .* SIDECAR_DRILL_ALLOW_UNKNOWN_DISK"):
        BackupService(settings).run_verify(latest=True, level="drill")


def test_an_embedded_scratch_server_that_would_not_fit_is_not_started(two_bases):
    """The backup directory keeps SIDECAR_MIN_FREE_BYTES, but not that plus the check's raw size
    (above 4 MB: two bases of the sample data)."""
    free = shutil.disk_usage(two_bases.backup_dir).free
    settings = two_bases.replace(min_free_bytes=free - 1024 * 1024)
    service = BackupService(settings)
    with pytest.raises(JobFailed, match=r"SIDECAR_DRILL_DIR: .* \(the raw size of what it restores\)"):
        service.run_pitr_verify()
    assert not list(settings.drill_directory.glob("server-*"))


def test_the_drill_uri_must_be_a_uri_empty_or_source(tmp_path):
    with pytest.raises(ConfigError, match="SIDECAR_DRILL_MONGODB_URI: must be empty"):
        settings_for("mongodb://127.0.0.1:1", tmp_path, drill_mongodb_uri="sourc")


def test_hosts_are_compared_in_one_spelling():
    ours = identity("mongodb://u:p@LOCALHOST,db-1:27018/?replicaSet=rs0", None)
    assert ours == ServerIdentity(None, frozenset({"127.0.0.1:27017", "db-1:27018"}))
    hello = {"setName": "rs0", "hosts": ["db-0.svc:27017"], "me": "[::1]:27019"}
    theirs = identity("mongodb://scratch:27017", hello)
    assert theirs.hosts == {"scratch:27017", "db-0.svc:27017", "127.0.0.1:27019"}


def test_a_servers_identity_is_its_set_name_every_member_it_names_and_its_process():
    hello = {
        "setName": "rs0",
        "hosts": ["db-0:27017"],
        "passives": ["db-1:27017"],
        "arbiters": ["db-2:27017"],
        "me": "db-0:27017",
        "topologyVersion": {"processId": "p-1", "counter": 6},
    }
    assert identity("mongodb://db-0", hello) == ServerIdentity(
        "rs0", frozenset({"db-0:27017", "db-1:27017", "db-2:27017"}), "p-1"
    )


def test_an_embedded_server_that_does_not_start_is_refused_with_the_tail_of_its_log(tmp_path, monkeypatch):
    """Its log is what says why (a port taken, a full disk); bytes that are not UTF-8 do not hide it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    server = bin_dir / "secantusd-py"  # found first on PATH: a server that exits at once
    server.write_text(
        "#!/bin/sh\nprintf 'x%.0s' $(seq 400)\nprintf '\\nbad \\377 byte: no room\\n'\nexit 3\n"
    )
    server.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path)
    with pytest.raises(VerifyFailed) as info, embedded_server(settings, 0, "j1"):
        pass
    home = settings.drill_directory / "server-j1"
    tail = "x" * 280 + "\nbad \ufffd byte: no room"
    assert str(info.value) == (
        f"cannot start the embedded scratch server: embedded server exited with 3; see {home}/server.log "
        f"(its log ends: {tail})"
    )
    assert info.value.check == SERVER_CHECK
    assert list(settings.drill_directory.iterdir()) == []


def test_scratch_entries_are_told_from_the_applications_also_inside_apply_ops():
    def entry(**fields: object) -> RawBSONDocument:
        return RawBSONDocument(bson.encode({"ts": Timestamp(1, 1), **fields}))

    assert is_scratch_entry(entry(op="i", ns=f"{SCRATCH_PREFIX}j1_maekcord.patients", o={"_id": 1}))
    assert is_scratch_entry(entry(op="c", ns=f"{SCRATCH_PREFIX}j1_x.$cmd", o={"dropDatabase": 1}))
    batch = [{"op": "i", "ns": f"{SCRATCH_PREFIX}j1_x.a", "o": {"_id": n}} for n in range(3)]
    assert is_scratch_entry(entry(op="c", ns="admin.$cmd", o={"applyOps": batch}))
    mixed = [*batch, {"op": "i", "ns": "maekcord.patients", "o": {"_id": 9}}]
    assert not is_scratch_entry(entry(op="c", ns="admin.$cmd", o={"applyOps": mixed}))
    assert not is_scratch_entry(entry(op="i", ns="maekcord.sidecar_drill_x", o={"_id": 1}))
    assert not is_scratch_entry(entry(op="n", ns="", o={"msg": "periodic noop"}))
