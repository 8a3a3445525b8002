"""The oplog archiver against the real embedded server: what it stores is the server's oplog, byte for
byte, in slices that join; gaps (a rollover while stopped, a missing or damaged slice) are found with
their bounds; base backups open windows; bsondump reads a slice."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bson
import pymongo
import pyrage
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer, free_port
from sidecar.health import HealthMonitor
from sidecar.metrics import SidecarMetrics
from sidecar.pitr import optime
from sidecar.pitr.capture.tailer import OplogWindow, oplog_window
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import SliceBuffer, oplog_dir, read_entries, write_slice
from sidecar.pitr.status import pitr_status
from sidecar.service import BackupService
from tests.helpers import discard, settings_for
from tests.pitr_support import (
    archive_span,
    archived,
    archiving,
    server_entries,
    stored_digest,
    wait_for_slices,
    wait_running,
    wait_until_stored,
    write_load,
)

STOCK_TOOLS = Path(__file__).resolve().parents[1].parent / "shared/tools/mongodb-database-tools/bin"
BSONDUMP = shutil.which("bsondump") or shutil.which("bsondump", path=str(STOCK_TOOLS))


@pytest.fixture(scope="module")
def pitr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A fresh server for this module: its oplog stays small (on the embedded server every oplog
    query scans the whole oplog, and the session server's grows with the whole suite)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("pitr") / "data").start()
    try:
        yield server
    finally:
        discard(server)


@pytest.fixture
def pitr_client(pitr_server: EmbeddedServer) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(pitr_server.uri) as client:
        yield client


@pytest.fixture
def make_settings(tmp_path: Path, pitr_server: EmbeddedServer) -> Callable[..., Settings]:
    return lambda **values: settings_for(pitr_server.uri, tmp_path, **values)


def pos(data: dict[str, int]) -> Timestamp:
    return optime.from_json(data)


def test_the_archive_is_the_servers_oplog_byte_for_byte_under_a_write_load(make_settings, pitr_client):
    settings = make_settings(pitr="auto", pitr_slice_seconds=0.3, pitr_slice_max_bytes=4096)
    with archiving(settings) as runner:
        wait_running(runner)
        write_load(pitr_client)
        wait_until_stored(settings, pitr_client)
    after, last = archive_span(settings)
    stored = archived(settings)
    assert stored == server_entries(pitr_client, after, last)
    entries = [bson.decode(raw) for raw in stored]
    assert {e["op"] for e in entries} >= {"i", "u", "d", "c"}
    assert any(e["op"] == "u" and e["o"].get("$v") == 2 for e in entries)  # the diff format
    assert {c for e in entries if e["op"] == "c" for c in e["o"]} >= {
        "create",
        "createIndexes",
        "dropIndexes",
        "drop",
    }
    in_txn = [e for e in entries if "txnNumber" in e]
    assert len(in_txn) >= 9 and len({e["ts"] for e in in_txn}) == 3  # one ts per transaction

    directory = oplog_dir(settings)
    slices = SliceCatalog(directory).slices()
    assert len(slices) >= 5  # cut by size (4 KiB) as well as by time
    for before, after_it in itertools.pairwise(slices):
        assert after_it["prev"] == before["last"]  # the chain joins
        assert pos(after_it["first"]) > pos(before["last"])  # never inside a group sharing one ts
    for entry in slices:
        raws = read_entries(settings, directory / entry["fileName"])
        decoded = [bson.decode(r) for r in raws]
        assert entry["entries"] == len(raws) and entry["rawBytes"] == sum(map(len, raws))
        assert entry["sha256"] == stored_digest(directory / entry["fileName"])
        assert (directory / entry["fileName"]).stat().st_size == entry["sizeBytes"]
        assert pos(entry["first"]) == decoded[0]["ts"] and pos(entry["last"]) == decoded[-1]["ts"]
        assert (
            entry["fileName"]
            == f"oplog-{optime.label(decoded[0]['ts'])}-{optime.label(decoded[-1]['ts'])}.bson.gz"
        )
        assert sum(entry["namespaces"].values()) == len(raws)
        assert set(entry["namespaces"]) == {e["ns"] for e in decoded}
    status = pitr_status(settings)
    assert status["gaps"] == [] and status["slices"]["entries"] == len(stored)
    assert status["serverOplog"]["last"] is not None


@pytest.mark.skipif(BSONDUMP is None, reason="bsondump (mongodb-database-tools) not found")
def test_bsondump_reads_a_slice(make_settings, pitr_client, tmp_path):
    settings = make_settings(pitr="auto", pitr_slice_seconds=0.2)
    with archiving(settings) as runner:
        wait_running(runner)
        write_load(pitr_client, db="pitrdump", rounds=1)
        wait_until_stored(settings, pitr_client)
    entry = SliceCatalog(oplog_dir(settings)).slices()[0]
    plain = tmp_path / "slice.bson"
    plain.write_bytes(gzip.decompress((oplog_dir(settings) / entry["fileName"]).read_bytes()))
    out = subprocess.run([BSONDUMP, "--quiet", str(plain)], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == entry["entries"]
    assert json.loads(lines[0])["ts"] == {"$timestamp": {"t": entry["first"]["t"], "i": entry["first"]["i"]}}


def test_a_size_cut_due_inside_a_transaction_waits_for_its_last_entry(make_settings, pitr_client):
    """The embedded server logs a transaction as one entry per write, all with one timestamp. Here they
    pass SIDECAR_PITR_SLICE_MAX_BYTES several times over, so a size cut is due inside the group every
    time: the slice still ends after its last entry. (mongod logs one applyOps entry: trivially whole.)"""
    settings = make_settings(pitr="auto", pitr_slice_seconds=3600, pitr_slice_max_bytes=1024)
    coll = pitr_client.pitrtx.visits
    with archiving(settings) as runner:
        wait_running(runner)
        coll.insert_one({"_id": "before"})
        with pitr_client.start_session() as session, session.start_transaction():
            for k in range(6):
                coll.insert_one({"_id": f"tx{k}", "note": "x" * 600}, session=session)
        coll.insert_one({"_id": "after", "pad": "y" * 2048})  # past the limit alone: cut when idle
        wait_until_stored(settings, pitr_client)
    stamps = [
        [bson.decode(raw)["ts"] for raw in read_entries(settings, oplog_dir(settings) / s["fileName"])]
        for s in SliceCatalog(oplog_dir(settings)).slices()
    ]
    for before, after in itertools.pairwise(stamps):
        assert before[-1] < after[0], "a slice ends inside a group of entries sharing one timestamp"
    written = [bson.decode(raw) for raw in archived(settings)]
    in_txn = [e["ts"] for e in written if e.get("ns") == "pitrtx.visits" and "txnNumber" in e]
    if len(in_txn) > 1:  # the embedded server's shape: one timestamp, one slice
        (holding,) = [s for s in stamps if in_txn[0] in s]
        assert holding.count(in_txn[0]) == len(in_txn) == 6


def test_slices_are_age_encrypted_when_recipients_are_set(make_settings, pitr_client, tmp_path):
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(str(identity) + "\n")
    settings = make_settings(
        pitr="auto", pitr_slice_seconds=0.2, age_recipients=str(identity.to_public()), age_identity_file=key
    )
    with archiving(settings) as runner:
        wait_running(runner)
        pitr_client.pitrage.docs.insert_many([{"secret": n} for n in range(10)])
        wait_until_stored(settings, pitr_client)
    slices = SliceCatalog(oplog_dir(settings)).slices()
    assert all(s["fileName"].endswith(".bson.gz.age") and s["encrypted"] for s in slices)
    raw = (oplog_dir(settings) / slices[0]["fileName"]).read_bytes()
    assert raw.startswith(b"age-encryption.org/v1") and b"secret" not in raw
    after, last = archive_span(settings)
    assert archived(settings) == server_entries(pitr_client, after, last)


def test_a_missing_or_damaged_slice_is_a_gap_naming_the_file(make_settings, pitr_client):
    settings = make_settings(pitr="auto", pitr_slice_seconds=0.1)
    with archiving(settings) as runner:
        wait_running(runner)
        for k in range(6):
            pitr_client.pitrgap.docs.insert_one({"k": k})
            wait_for_slices(settings, k + 1)
    directory = oplog_dir(settings)
    slices = SliceCatalog(directory).slices()
    assert pitr_status(settings, deep=True)["gaps"] == []

    (directory / slices[1]["fileName"]).unlink()
    damaged = directory / slices[3]["fileName"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 tells
    damaged.write_bytes(bytes(data))
    with open(directory / slices[5]["fileName"], "ab") as handle:
        handle.write(b"junk")  # another size than the catalog's

    gaps = pitr_status(settings)["gaps"]
    assert [(g["cause"], g["files"]) for g in gaps] == [
        ("slice-missing", [slices[1]["fileName"]]),
        ("slice-damaged", [slices[5]["fileName"]]),
    ]
    assert gaps[0]["from"] == slices[0]["last"] and gaps[0]["to"] == slices[2]["first"]
    assert gaps[1]["from"] == slices[4]["last"] and gaps[1]["to"] is None  # nothing good after it
    deep = pitr_status(settings, deep=True)["gaps"]
    assert [(g["cause"], g["files"]) for g in deep] == [
        ("slice-missing", [slices[1]["fileName"]]),
        ("slice-damaged", [slices[3]["fileName"]]),
        ("slice-damaged", [slices[5]["fileName"]]),
    ]
    assert "sha256" in deep[1]["detail"]
    assert deep[1]["from"] == slices[2]["last"] and deep[1]["to"] == slices[4]["first"]


def _backup(service: BackupService) -> dict:
    entry = service.run_backup(service.new_job("backup", "manual"))
    assert entry["oplog"], "a base backup on a replica set records its oplog cut"
    return entry


def _gap_gauge(settings, service, state) -> float:
    health = HealthMonitor(settings)
    try:
        text = SidecarMetrics(settings, service, health, pitr=state).render()[0].decode()
    finally:
        health.close()
    line = next(line for line in text.splitlines() if line.startswith("mongobackup_pitr_gaps "))
    return float(line.split()[1])


def test_a_rollover_while_stopped_is_a_gap_and_a_later_base_backup_opens_a_new_window(tmp_path):
    server = EmbeddedServer(tmp_path / "tiny-oplog", extra_args=("--oplog-max-entries", "20")).start()
    try:
        client = pymongo.MongoClient(server.uri)
        settings = settings_for(
            server.uri, tmp_path, pitr="auto", pitr_slice_seconds=0.2, verify_after_backup="off"
        )
        service = BackupService(settings)
        client.clinic.patients.insert_many([{"n": n} for n in range(5)])
        first = _backup(service)
        with archiving(settings) as runner:  # a first start begins at the newest backup's point
            wait_running(runner)
            client.clinic.patients.insert_many([{"n": n} for n in range(5, 10)])
            wait_until_stored(settings, client)
        slices = SliceCatalog(oplog_dir(settings)).slices()
        assert slices[0]["prev"] == first["oplog"]["end"]
        stored = pos(slices[-1]["last"])

        for n in range(40):  # while the archiver is stopped the oplog rolls past it
            client.clinic.patients.insert_one({"late": n})
        client.admin.command({"secantusAdmin.pruneOplog": 1})
        oldest = oplog_window(client).first
        assert oldest > stored

        with archiving(settings) as runner:
            wait_running(runner)
            client.clinic.patients.insert_one({"after": 1})
            wait_until_stored(settings, client)
            status = pitr_status(settings, state=runner.state)
            assert [(g["cause"], pos(g["from"]), pos(g["to"])) for g in status["gaps"]] == [
                ("oplog-rollover", stored, oldest)
            ]
            assert runner.state.rollovers == 1 and runner.state.gaps == 1
            assert _gap_gauge(settings, service, runner.state) == 1.0
            assert [(w["baseBackup"], pos(w["start"]), pos(w["end"])) for w in status["windows"]] == [
                (first["fileName"], pos(first["oplog"]["end"]), stored)
            ]
            assert runner.state.window_start == 0.0  # the newest entries are in no window yet

            second = _backup(service)
            client.clinic.patients.insert_one({"after": 2})
            newest = wait_until_stored(settings, client)
            status = pitr_status(settings, state=runner.state)
            assert [(w["baseBackup"], pos(w["start"])) for w in status["windows"]] == [
                (first["fileName"], pos(first["oplog"]["end"])),
                (second["fileName"], pos(second["oplog"]["end"])),
            ]
            assert pos(status["windows"][1]["lastEntry"]) == newest
        assert runner.state.window_start == float(second["oplog"]["end"]["t"])
        assert not [p for p in oplog_dir(settings).iterdir() if p.name.endswith(".partial")]
    finally:
        discard(server)


def test_pitr_on_refuses_a_standalone_server_in_stream_and_serve(tmp_path):
    server = EmbeddedServer(tmp_path / "standalone", extra_args=("--standalone",)).start()
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
            "SIDECAR_MONGODB_URI": server.uri,
            "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
            "SIDECAR_LOG_DIR": str(tmp_path / "logs"),
            "SIDECAR_MIN_FREE_BYTES": "0",
        }
        sidecar = str(Path(sys.executable).with_name("sidecar"))
        for mode, reason in (("on", "needs a replica set member"), ("auto", "standalone")):
            done = subprocess.run(
                [sidecar, "pitr", "stream"],
                env={**env, "SIDECAR_PITR": mode},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 2, done.stderr
            assert reason in done.stderr.splitlines()[-1]
        serve_env = {
            **env,
            "SIDECAR_PITR": "on",
            "SIDECAR_ADMIN_TOKEN": "a" * 20,
            "SIDECAR_PORT": str(free_port()),
        }
        done = subprocess.run([sidecar, "serve"], env=serve_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "SIDECAR_PITR=on needs a replica set member" in done.stderr
    finally:
        discard(server)


def test_serve_starts_archiving_once_a_standalone_server_is_a_replica_set_member(tmp_path):
    """SIDECAR_PITR=auto in serve: the replica set initiated after the sidecar started is archived."""
    server = EmbeddedServer(tmp_path / "standalone", extra_args=("--standalone",)).start()
    settings = settings_for(server.uri, tmp_path, pitr="auto", pitr_slice_seconds=0.2)
    try:
        with archiving(settings, standalone_recheck=0.2) as runner:
            deadline = time.monotonic() + 30
            while runner.state.enabled is not False:
                assert time.monotonic() < deadline, runner.state
                time.sleep(0.05)
            assert runner.wait(0.5) is False, "the runner asks again instead of ending"
            server.stop()
            server = EmbeddedServer(tmp_path / "member", port=server.port).start()
            wait_running(runner, timeout=60)
            assert runner.state.enabled is True
            with pymongo.MongoClient(server.uri) as client:
                client.pitrlate.docs.insert_one({"after": "rs.initiate"})
                wait_until_stored(settings, client)
        namespaces = {bson.decode(raw).get("ns") for raw in archived(settings)}
        assert "pitrlate.docs" in namespaces
    finally:
        discard(server)


def test_a_second_archiver_on_the_same_directory_stands_by(make_settings, pitr_client):
    settings = make_settings(pitr="auto", pitr_slice_seconds=0.2)
    with archiving(settings) as first:
        wait_running(first)
        with archiving(settings) as second:
            deadline = time.monotonic() + 30
            while "another oplog archiver" not in (second.state.error or ""):
                assert time.monotonic() < deadline, second.state
                time.sleep(0.05)
            assert f"pid {os.getpid()}" in second.state.error and not second.state.running
            pitr_client.pitrtwo.docs.insert_one({"one": "writer"})
            wait_until_stored(settings, pitr_client)
    after, last = archive_span(settings)
    assert archived(settings) == server_entries(pitr_client, after, last)


def _stored_files(settings: Settings) -> dict[str, bytes]:
    """The archive's slices and catalog (not the archiver's lock and presence files)."""
    return {p.name: p.read_bytes() for p in oplog_dir(settings).glob("oplog-*")}


def test_an_archive_ahead_of_the_servers_oplog_is_refused_and_nothing_is_written(make_settings, pitr_client):
    """Another server, or this one restored: its oplog ends before the archive's newest entry. The
    archiver must not go on from there (the two histories do not join): it refuses, naming both."""
    settings = make_settings(pitr="auto", pitr_slice_seconds=0.1)
    pitr_client.pitrbehind.docs.insert_one({"k": 1})
    server_last = oplog_window(pitr_client).last
    ahead = Timestamp(server_last.time + 86400, 1)  # the other server's history is a day further on
    oplog_dir(settings).mkdir(parents=True)
    buffer = SliceBuffer(prev=None)
    buffer.add(RawBSONDocument(bson.encode({"op": "n", "ns": "", "o": {"msg": "x"}, "ts": ahead})), ahead)
    catalog = SliceCatalog(oplog_dir(settings))
    stored = write_slice(settings, buffer)
    catalog.add_slice(stored)
    files = _stored_files(settings)
    with archiving(settings) as runner:
        assert runner.wait(30), "the archiver goes on after an archive ahead of the server"
    assert oplog_window(pitr_client).last == server_last
    refusal = (
        f"the server's oplog ends at {optime.label(server_last)}, before the archive's newest entry "
        f"{optime.label(ahead)}: is this another or a restored server? Move the oplog directory aside "
        "to start a new archive"
    )
    assert runner.fatal == runner.state.error == refusal
    assert catalog.load()["slices"] == [stored] and catalog.load()["gaps"] == []
    assert _stored_files(settings) == files  # the slice and its catalog, byte for byte; no slice more


def test_the_servers_oplog_window_as_pitr_status_reports_it():
    assert OplogWindow(Timestamp(100, 1), Timestamp(160, 2)).as_json() == {
        "first": {"t": 100, "i": 1},
        "last": {"t": 160, "i": 2},
        "firstTime": "1970-01-01T00:01:40Z",
        "lastTime": "1970-01-01T00:02:40Z",
        "seconds": 60.0,
    }
    assert OplogWindow().as_json() == {  # an empty oplog, or the server not asked
        "first": None,
        "last": None,
        "firstTime": None,
        "lastTime": None,
        "seconds": 0.0,
    }
