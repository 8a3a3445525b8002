"""Base backups join the archive's chain: every backup on a replica set records its oplog cut; with the
archiver at work a full backup takes the entries of its cut from the archive (byte for byte the
server's, and stock mongorestore --oplogReplay replays them); without it, or when the archive does
not reach the cut in time, the backup reads the server's oplog and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bson
import pymongo
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.archive import ArchiveReader, DocumentChunk
from sidecar.codec.gzip_stream import gzip_reader
from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.pitr import optime
from sidecar.pitr.capture.cut import ArchiveCut
from sidecar.pitr.capture.cut_request import REQUEST_NAME, requested_cut
from sidecar.pitr.capture.tailer import oplog, oplog_window
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import SliceBuffer, oplog_dir, write_slice
from sidecar.service import BackupService
from tests.helpers import discard, settings_for
from tests.pitr_support import archiving, wait_running, wait_until_stored
from tests.test_backup import NamespaceHook

STOCK_TOOLS = Path(__file__).resolve().parents[1].parent / "shared/tools/mongodb-database-tools/bin"
MONGORESTORE = shutil.which("mongorestore") or shutil.which("mongorestore", path=str(STOCK_TOOLS))


@pytest.fixture(scope="module")
def cut_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SIDECAR_TEST_MONGODB_URI, or a fresh embedded server: its oplog stays small (every oplog query
    on the embedded server scans the whole oplog)."""
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    if given:
        yield given
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("cut") / "data").start()
    try:
        yield server.uri
    finally:
        discard(server)


@pytest.fixture
def cut_client(cut_uri: str) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(cut_uri) as client:
        client.drop_database("cutdata")
        client.cutdata.base.insert_many([{"n": n} for n in range(200)])
        yield client


@pytest.fixture
def make_settings(tmp_path: Path, cut_uri: str) -> Callable[..., Settings]:
    return lambda **values: settings_for(cut_uri, tmp_path, **values)


def _backup(settings: Settings, client: pymongo.MongoClient, **hooks: object) -> tuple[dict, list]:
    """A backup through the service, inserting one document as each namespace is dumped."""
    written: list = []

    def write(state) -> None:
        if state.phase == "dump":  # while the collections are read (not after the oplog namespace)
            written.append(client.cutdata.during.insert_one({"k": len(written)}).inserted_id)

    service = BackupService(settings)
    job = service.new_job("backup", "manual")
    job.progress = NamespaceHook(write)
    return service.run_backup(job), written


def _archived_oplog(settings: Settings, entry: dict) -> list[bytes]:
    with open(settings.backup_dir / entry["fileName"], "rb") as raw, gzip_reader(raw) as stream:
        reader = ArchiveReader(stream)
        reader.read_prelude()
        return [
            bytes(doc)
            for event in reader.events()
            if isinstance(event, DocumentChunk) and event.namespace.is_oplog
            for doc in event.documents()
        ]


@pytest.mark.parametrize("start_archived", [False, True], ids=["archive-follows-start", "start-archived"])
def test_with_the_archiver_running_the_cut_comes_from_the_archive(
    make_settings, cut_client, tmp_path, start_archived
):
    # slices are due after 10 min: only the backup's cut request makes the archiver store one now
    settings = make_settings(pitr="auto", pitr_slice_seconds=600, pitr_cut_wait_seconds=20)
    with archiving(settings) as runner:
        wait_running(runner)  # it has its start position: writes from now on are archived
        if start_archived:  # else the archive begins right after the newest entry, the dump's start
            cut_client.cutdata.before.insert_one({"k": 0})
            wanted = oplog_window(cut_client).last
            with requested_cut(oplog_dir(settings), wanted):
                # the cut asked for, not the newest entry: a shared server (mongod's periodic no-op,
                # other clients) may write after the request, and nothing cuts before 10 min
                wait_until_stored(settings, cut_client, reach=wanted)
        started = time.monotonic()
        entry, written = _backup(settings, cut_client)
        took = time.monotonic() - started
        assert not (oplog_dir(settings) / REQUEST_NAME).exists()  # the request is withdrawn
    cut = entry["oplog"]
    assert cut["source"] == "archive" and "fallback" not in cut, cut
    assert took < 20  # the archiver cut on request, not after SIDECAR_PITR_SLICE_SECONDS
    start, end = optime.from_json(cut["start"]), optime.from_json(cut["end"])
    from_archive = _archived_oplog(settings, entry)
    assert from_archive == [e.raw for e in oplog(cut_client).find({"ts": {"$gte": start, "$lte": end}})]
    assert cut["entries"] == len(from_archive) >= len(written) >= 1
    inserted = [d["o"]["_id"] for d in map(bson.decode, from_archive) if d["ns"] == "cutdata.during"]
    assert inserted == written

    with EmbeddedServer(tmp_path / "target") as target, pymongo.MongoClient(target.uri) as check:
        if not _stock_replay(settings.backup_dir / entry["fileName"], target.uri):
            return  # the embedded server: no applyOps, so no stock replay to check
        restored = {d["_id"] for d in check.cutdata.during.find({}, {"_id": 1})}
        assert set(written) <= restored  # the writes made during the dump, replayed from the archive's oplog


def _stock_replay(archive: Path, uri: str) -> bool:
    """Stock mongorestore --oplogReplay of the archive; False where the server has no applyOps (the
    embedded one): there mongorestore restores the collections, reads the oplog namespace and stops
    at the first applyOps."""
    if MONGORESTORE is None:
        pytest.skip("mongorestore (mongodb-database-tools) not found")
    args = [MONGORESTORE, f"--uri={uri}", f"--archive={archive}", "--gzip", "--oplogReplay"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        return True
    assert "finished restoring cutdata.base (200 documents, 0 failures)" in done.stderr, done.stderr
    assert "replaying oplog" in done.stderr and "no such command: 'applyOps'" in done.stderr, done.stderr
    return False


def test_without_the_archiver_the_backup_reads_the_servers_oplog_and_says_so(make_settings, cut_client):
    entry, written = _backup(make_settings(pitr="auto"), cut_client)
    cut = entry["oplog"]
    assert cut["source"] == "server" and cut["fallback"] == "the oplog archiver is not running"
    assert cut["entries"] == len(_archived_oplog(make_settings(), entry)) > len(written) >= 1


def test_an_archive_that_does_not_reach_the_cut_in_time_is_a_fallback(make_settings, cut_client):
    settings = make_settings(pitr="auto", pitr_slice_seconds=600, pitr_cut_wait_seconds=0)
    with archiving(settings) as runner:
        wait_running(runner)  # it has its start position: writes from now on are archived
        entry, _ = _backup(settings, cut_client)
    cut = entry["oplog"]
    assert cut["source"] == "server"
    assert cut["fallback"].startswith("the oplog archive did not reach ") and "within 0s" in cut["fallback"]


def test_a_filtered_dump_records_its_cut(make_settings, cut_client):
    entry, _ = _backup(make_settings(database="cutdata"), cut_client)
    cut = entry["oplog"]
    assert cut["source"] == "none" and cut["entries"] is None  # no oplog namespace in the archive
    assert optime.from_json(cut["start"]) < optime.from_json(cut["end"])  # the writes during the dump
    assert set(entry["namespaces"]) == {"cutdata.base"}


def test_a_cut_inside_slices_takes_only_its_range_from_the_slices_at_its_ends(make_settings, cut_client):
    """Slices from the archiver's writer, the cut's start and end inside the first and last: those two
    give only their entries in ``[start, end]``, the one between gives all of its."""
    settings = make_settings()
    catalog = SliceCatalog(oplog_dir(settings))
    oplog_dir(settings).mkdir(parents=True)
    entries, prev = {}, None
    for seconds in ((100, 105, 110), (115, 120, 125), (130, 135, 140)):
        buffer = SliceBuffer(prev)
        for t in seconds:
            ts = Timestamp(t, 1)
            entries[t] = bson.encode({"op": "n", "ns": "", "o": {"msg": t}, "ts": ts})
            buffer.add(RawBSONDocument(entries[t]), ts)
        catalog.add_slice(write_slice(settings, buffer))
        prev = buffer.last
    with catalog.archiver_lock():  # as while an archiver runs
        taken = ArchiveCut(settings, cut_client).take(Timestamp(105, 1), Timestamp(130, 1))
        assert not isinstance(taken, str), taken
        assert b"".join(taken) == b"".join(entries[t] for t in (105, 110, 115, 120, 125, 130))
