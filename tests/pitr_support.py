"""Shared by the PITR tests: a write load that covers every kind of oplog entry, the archive read
back, and the server's oplog over the same stretch (to compare byte for byte)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymongo
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.pitr.capture.runner import PitrRunner
from sidecar.pitr.capture.tailer import oplog, oplog_window
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir, read_entries


def write_load(client: pymongo.MongoClient, db: str = "pitrload", rounds: int = 3) -> None:
    """Inserts, $set/$push/$unset updates, replaces, deletes, a multi-document transaction, create
    and drop of a collection and of an index."""
    patients = client[db].patients
    for r in range(rounds):
        patients.insert_many([{"n": n, "round": r, "tags": []} for n in range(20)])
        for n in range(5):
            patients.insert_one({"n": 100 + n, "round": r, "note": "x" * 200})
        patients.update_one({"n": 1, "round": r}, {"$set": {"name": "kim", "vitals.bp": 120}})
        patients.update_one({"n": 2, "round": r}, {"$push": {"tags": {"$each": ["a", "b"]}}})
        patients.update_one({"n": 3, "round": r}, {"$unset": {"tags": ""}, "$inc": {"visits": 1}})
        patients.update_many({"round": r, "n": {"$lt": 5}}, {"$set": {"seen": True}})
        patients.replace_one({"n": 4, "round": r}, {"n": 4, "round": r, "replaced": True})
        patients.delete_one({"n": 5, "round": r})
        patients.delete_many({"round": r, "n": {"$gte": 100}})
        with client.start_session() as session, session.start_transaction():
            patients.insert_one({"txn": r, "part": 1}, session=session)
            client[db].visits.insert_one({"txn": r, "part": 2}, session=session)
            patients.update_one({"n": 6, "round": r}, {"$set": {"txn": r}}, session=session)
        scratch = client[db].create_collection(f"scratch{r}")
        scratch.create_index("k")
        scratch.insert_one({"k": r})
        scratch.drop_index("k_1")
        scratch.drop()


def archived(settings: Settings) -> list[bytes]:
    directory = oplog_dir(settings)
    return [
        raw
        for s in SliceCatalog(directory).slices()
        for raw in read_entries(settings, directory / s["fileName"])
    ]


def server_entries(client: pymongo.MongoClient, after: Timestamp, last: Timestamp) -> list[bytes]:
    return [e.raw for e in oplog(client).find({"ts": {"$gt": after, "$lte": last}})]


def archive_span(settings: Settings) -> tuple[Timestamp, Timestamp]:
    """(the entry the archive follows, its newest entry)."""
    slices = SliceCatalog(oplog_dir(settings)).slices()
    return optime.from_json(slices[0]["prev"]), optime.from_json(slices[-1]["last"])


def wait_until_stored(
    settings: Settings, client: pymongo.MongoClient, timeout: float = 60, reach: Timestamp | None = None
) -> Timestamp:
    """Until the archive holds ``reach`` (default: the server's newest entry at the moment of the call)."""
    newest = reach or oplog_window(client).last
    catalog = SliceCatalog(oplog_dir(settings))
    deadline = time.monotonic() + timeout
    while (catalog.last_position() or Timestamp(0, 0)) < newest:
        assert time.monotonic() < deadline, f"the archive did not reach {newest}"
        time.sleep(0.1)
    return newest


def wait_running(runner: PitrRunner, timeout: float = 30) -> None:
    """Until the archiver tails the oplog (writes from then on are archived)."""
    deadline = time.monotonic() + timeout
    while not runner.state.running:
        assert runner.fatal is None, runner.fatal
        assert time.monotonic() < deadline, "the archiver did not start"
        time.sleep(0.05)


def wait_for_slices(settings: Settings, count: int, timeout: float = 60) -> None:
    catalog = SliceCatalog(oplog_dir(settings))
    deadline = time.monotonic() + timeout
    while not (catalog.path.exists() and len(catalog.slices()) >= count):
        assert time.monotonic() < deadline, f"fewer than {count} slices after {timeout}s"
        time.sleep(0.1)


@contextmanager
def archiving(settings: Settings, standalone_recheck: float | None = None) -> Iterator[PitrRunner]:
    """The archiver in its thread, as ``sidecar serve`` runs it; stopped (and flushed) on exit."""
    runner = PitrRunner(settings, standalone_recheck=standalone_recheck)
    runner.start()
    try:
        yield runner
    finally:
        assert runner.stop(30), "the archiver did not stop"


def background_writes(
    client: pymongo.MongoClient, stop: threading.Event, db: str = "pitrbg"
) -> threading.Thread:
    """Inserts one after another until ``stop`` is set."""

    def run() -> None:
        n = 0
        while not stop.is_set():
            client[db].events.insert_one({"n": n})
            n += 1
            time.sleep(0.002)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stored_digest(path: Path) -> str:
    """The sha256 of a slice file's stored bytes, as its catalog entry records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
