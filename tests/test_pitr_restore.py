"""Restore to a point, against real embedded servers: a scripted history after a base backup with the
archiver running; for each recorded point a snapshot of the data taken then; ``restore --to-time``
into a fresh server reproduces it byte for byte (documents as RawBSON, indexes, options), and so does
``--before-op`` of the deleteMany; one collection under a new name beside the live one; points in a
gap or outside the window are refused naming the nearest restorable points."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.api.app import Sidecar, create_app
from sidecar.cli import main as cli_main
from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.pitr import optime
from sidecar.pitr.capture.presence import caught_up_epoch
from sidecar.pitr.planning.restore_point import PointTarget
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from sidecar.pitr.status import caught_up_position, pitr_status
from sidecar.service import BackupService, JobFailed
from sidecar.time_input import parse_iso, parse_position
from tests.helpers import discard, job_log, run_cli, settings_for
from tests.pitr_support import archiving, wait_until_stored
from tests.replay_support import newest_ts, oplog, snapshot

DB = "clinic"


@dataclass
class History:
    root: Path
    source: EmbeddedServer
    target: EmbeddedServer
    settings: Settings  # the source's, with its backup directory
    base: dict[str, Any]
    points: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # label -> (T, snapshot)
    seconds: dict[str, str] = field(default_factory=dict)  # label -> ISO second (nothing else in it)
    delete_many: Timestamp | None = None  # its first entry
    last_entry: Timestamp | None = None  # the archive's newest entry
    final: dict[str, Any] = field(default_factory=dict)  # the snapshot at the last entry

    def target_settings(self) -> Settings:
        return settings_for(self.target.uri, self.root)


def _next_second(client: pymongo.MongoClient) -> None:
    """Until the server's clock is past the second of its newest entry."""
    newest = newest_ts(client).time
    while time.time() < newest + 1.05:
        time.sleep(0.05)


def _script(client: pymongo.MongoClient, record: Callable[[str], None]) -> Timestamp:
    db = client[DB]
    db.patients.insert_many([{"_id": n, "n": n, "tags": ["a"]} for n in range(10, 20)])
    # a collection the base backup does not hold: created, indexed and written after it
    db.create_collection("labresults", validator={"patient": {"$exists": True}}, validationAction="warn")
    db.labresults.create_index([("patient", 1), ("at", -1)], name="patient_at")
    db.labresults.insert_many([{"_id": f"l{n}", "patient": n, "at": n * 10} for n in range(10, 15)])
    record("inserted")
    # several new fields per update, each listed in MongoDB's order (the embedded server appends them
    # in the order listed, MongoDB 5.0+ in its own; docs/pitr-replay.md, Limits)
    db.patients.update_one({"_id": 10}, {"$set": {"name": "kim", "vitals.bp": 120, "vitals.hr": 60}})
    db.patients.update_one({"_id": 12}, {"$unset": {"tags": ""}, "$inc": {"score": 2, "visits": 1}})
    db.patients.update_many({"_id": {"$in": [11, 12]}}, {"$set": {"flag": "young"}, "$push": {"tags": "b"}})
    db.patients.update_one(
        {"_id": 13}, {"$inc": {"9": 1, "10": 1}, "$set": {"kept": 1}, "$rename": {"n": "number"}}
    )
    db.labresults.update_one({"_id": "l11"}, {"$set": {"result": "ok"}})
    db.labresults.delete_one({"_id": "l12"})
    record("updated")
    db.patients.replace_one({"_id": 13}, {"n": 13, "replaced": True})
    db.patients.delete_one({"_id": 14})
    record("replaced-deleted")
    with client.start_session() as session, session.start_transaction():
        db.patients.insert_one({"_id": 100, "txn": 1}, session=session)
        db.visits.insert_one({"_id": 100, "patient": 100}, session=session)
        db.patients.update_one({"_id": 15}, {"$set": {"txn": 1}}, session=session)
    record("transaction")
    first_delete = newest_ts(client)
    db.patients.delete_many({"n": {"$gte": 16}})
    record("delete-many")
    db.patients.create_index([("n", 1)], name="n_1", unique=True)
    record("indexed")
    db.scratch.drop()
    record("dropped")
    db.visits.insert_one({"_id": "after"})  # the archive holds entries after the last recorded second
    return first_delete


def _caught_up_past(settings: Settings, epoch: float, timeout: float = 60) -> None:
    """Until the archiver has recorded a caught-up time past ``epoch`` (it does so while idle)."""
    deadline = time.monotonic() + timeout
    while (caught_up_epoch(oplog_dir(settings)) or 0) < epoch:
        assert time.monotonic() < deadline, f"the archiver did not record a caught-up time past {epoch}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("pitr-restore")
    source = EmbeddedServer(root / "source").start()
    target = EmbeddedServer(root / "target").start()
    try:
        settings = settings_for(
            source.uri, root, pitr="auto", pitr_slice_seconds=0.2, verify_after_backup="off"
        )
        client = pymongo.MongoClient(source.uri)
        db = client[DB]
        db.create_collection("visits", validator={"patient": {"$exists": True}}, validationAction="warn")
        db.patients.insert_many([{"_id": n, "n": n, "tags": []} for n in range(10)])
        db.scratch.insert_one({"k": 1})
        service = BackupService(settings)
        base = service.run_backup(service.new_job("backup", "manual"))
        history = History(root, source, target, settings, base)
        _next_second(client)

        def record(label: str) -> None:
            ts = newest_ts(client)
            history.points[label] = (f"{ts.time}:{ts.inc}", snapshot(client, DB))
            history.seconds[label] = optime.iso(ts)
            _next_second(client)  # the recorded second holds nothing after the snapshot

        with archiving(settings):
            first = _script(client, record)
            history.last_entry = wait_until_stored(settings, client)
            history.final = snapshot(client, DB)
            _caught_up_past(settings, history.last_entry.time + 2)  # the archiver idles, caught up
        history.delete_many = next(
            e["ts"] for e in oplog(client).find({"ts": {"$gt": first}, "op": "d", "ns": f"{DB}.patients"})
        )
        client.close()
        yield history
    finally:
        discard(target)
        discard(source)


def _restore(history: History, settings: Settings | None = None, fresh: bool = True, **kw: Any) -> dict:
    settings = settings or history.target_settings()
    if fresh:
        with pymongo.MongoClient(settings.mongodb_uri) as client:
            client.drop_database(DB)
    kw.setdefault("safety_backup", False)
    return BackupService(settings).run_restore(**kw)


def _restored(history: History) -> dict[str, Any]:
    with pymongo.MongoClient(history.target.uri) as client:
        return snapshot(client, DB)


def test_every_recorded_point_restores_byte_for_byte(history: History) -> None:
    labels = list(history.points)
    assert len(labels) == 7
    for label in labels:
        text, expected = history.points[label]
        for given in (text, history.seconds[label]):  # t:i, and the ISO second (its whole second)
            result = _restore(history, point=PointTarget.to_time(given))
            assert _restored(history) == expected, (label, given)
            point = result["pointInTime"]
            assert point["baseBackup"] == history.base["fileName"]
            assert point["endPoint"]["t"] <= parse_position(text).time
            assert point["replay"]["pendingTransactions"] == 0


def test_a_transaction_is_never_half_applied(history: History) -> None:
    text, with_txn = history.points["transaction"]
    ts = parse_position(text)
    _restore(history, point=PointTarget.to_time(f"{ts.time}:{ts.inc - 1}"))
    before = _restored(history)
    assert before == history.points["replaced-deleted"][1]
    assert not [d for d in before["visits"]["documents"] if b"patient" in d]
    _restore(history, point=PointTarget.to_time(text))
    assert _restored(history) == with_txn


def test_before_op_of_the_delete_many_is_the_state_just_before_it(history: History) -> None:
    assert history.delete_many is not None
    op = f"{history.delete_many.time}:{history.delete_many.inc}"
    result = _restore(history, point=PointTarget.before_op(op))
    assert _restored(history) == history.points["transaction"][1]
    assert result["pointInTime"]["replay"]["stoppedAt"] == op
    with pytest.raises(JobFailed, match="no archived oplog entry is at"):
        _restore(history, point=PointTarget.before_op(f"{history.delete_many.time}:999999"))


def test_dry_run_names_the_plan_and_writes_nothing(history: History) -> None:
    text, _ = history.points["delete-many"]
    result = _restore(history, point=PointTarget.to_time(text), dry_run=True)
    point = result["pointInTime"]
    slices = [s["fileName"] for s in SliceCatalog(oplog_dir(history.settings)).slices()]
    assert point["slices"] and set(point["slices"]) <= set(slices)
    assert point["endPoint"]["t"] == parse_position(text).time
    deletes = point["planned"]["namespaces"][f"{DB}.patients"]["delete"]
    assert deletes == 5  # delete_one and the four of the deleteMany
    assert point["planned"]["namespaces"][f"{DB}.visits"]["insert"] == 1
    assert DB not in pymongo.MongoClient(history.target.uri).list_database_names()


def test_a_restore_over_data_takes_the_safety_backup_first(history: History) -> None:
    _restore(history, point=PointTarget.to_time(history.points["dropped"][0]))
    text, expected = history.points["inserted"]
    result = _restore(history, fresh=False, drop=True, safety_backup=True, point=PointTarget.to_time(text))
    assert result["safetyBackup"], "the namespaces it overwrites were backed up first"
    assert _restored(history) == expected


def test_one_collection_under_a_new_name_beside_the_changing_live_one(history: History) -> None:
    settings = settings_for(history.source.uri, history.root)
    stop = threading.Event()
    client = pymongo.MongoClient(history.source.uri)

    def keep_changing() -> None:
        n = 1000
        while not stop.is_set():
            client[DB].patients.insert_one({"_id": n, "n": n, "live": True})
            n += 1
            time.sleep(0.005)

    writer = threading.Thread(target=keep_changing, daemon=True)
    writer.start()
    try:
        for label, (text, expected) in history.points.items():
            _restore(
                history,
                settings,
                fresh=False,
                point=PointTarget.to_time(text),
                ns_include=[f"{DB}.patients"],
                ns_from=[f"{DB}.patients"],
                ns_to=[f"{DB}.patients_before"],
            )
            assert snapshot(client, DB)["patients_before"] == expected["patients"], label
            client[DB].patients_before.drop()
    finally:
        stop.set()
        writer.join()
    assert client[DB].patients.count_documents({"live": True}) > 0
    client.close()


ALONE = {"ns_include": [f"{DB}.labresults"], "ns_from": [f"{DB}.labresults"], "ns_to": [f"{DB}.lab_copy"]}


def test_a_collection_created_after_the_base_restores_alone_under_a_new_name(history: History) -> None:
    """The base holds no clinic.labresults: the filters apply to the replay too, which creates the copy
    with its options and indexes and writes it as it was at each point."""
    assert (
        f"{DB}.labresults" not in history.base["namespaces"]
        and f"{DB}.patients" in history.base["namespaces"]
    )
    for label, (text, expected) in history.points.items():
        result = _restore(history, point=PointTarget.to_time(text), **ALONE)
        restored = _restored(history)
        assert set(restored) == {"lab_copy"}, label
        assert restored["lab_copy"] == expected["labresults"], label
        assert result["namespaces"] == [] and result["pointInTime"]["replay"]["namespaces"][f"{DB}.lab_copy"]
    text, expected = history.points["updated"]
    refusal = (
        f"refusing to restore without drop: {DB}.lab_copy hold(s) documents, and only the replay to the "
        f"point writes it (created after base backup {history.base['fileName']}); restore under a new "
        'name ("nsFrom"/"nsTo") or with "drop": true, which replaces it'
    )
    with pytest.raises(JobFailed) as info:
        _restore(history, fresh=False, point=PointTarget.to_time(text), **ALONE)  # over the newest copy
    assert (str(info.value), info.value.stage) == (f"{refusal}; nothing was written", "restore")
    dry = _restore(history, fresh=False, dry_run=True, point=PointTarget.to_time(text), **ALONE)
    assert dry["warnings"] == [refusal]
    _restore(history, fresh=False, drop=True, point=PointTarget.to_time(text), **ALONE)
    assert _restored(history)["lab_copy"] == expected["labresults"]  # replaced, not merged
    flags = ["--ns-include", f"{DB}.labresults", "--ns-from", f"{DB}.labresults", "--ns-to", f"{DB}.lab_copy"]
    done = run_cli(history.target_settings(), "restore", "--to-time", text, *flags, "--drop", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"{DB}.lab_copy: " in done.stdout and done.stdout.strip().endswith("nothing was written")


def test_a_point_before_the_collection_existed_is_refused_for_it_alone(history: History) -> None:
    with pymongo.MongoClient(history.source.uri) as client:
        create = next(oplog(client).find({"ns": f"{DB}.$cmd", "o.create": "labresults"}))["ts"]
    with pytest.raises(JobFailed, match=r"no namespace of .* matches the given filters; nothing was written"):
        _restore(history, point=PointTarget.before_op(f"{create.time}:{create.inc}"), **ALONE)


def test_points_outside_the_window_or_in_a_gap_are_refused_naming_the_nearest(history: History) -> None:
    end = optime.from_json(history.base["oplog"]["end"])
    window_end = caught_up_position(history.settings)
    assert window_end is not None
    with pytest.raises(JobFailed) as early:
        _restore(history, point=PointTarget.to_time(f"{end.time - 5}:1"))
    assert f"the earliest after it is {end.time}:{end.inc}" in str(early.value)
    assert "nothing was written" in str(early.value)
    with pytest.raises(JobFailed) as late:
        _restore(history, point=PointTarget.to_time(f"{window_end.time + 3600}:0"))
    assert f"the latest before it is {window_end.time}:{window_end.inc}" in str(late.value)

    copy = history.root / "gap"
    shutil.copytree(history.settings.backup_dir, copy / "backups")
    slices = SliceCatalog(oplog_dir(history.settings)).slices()
    assert len(slices) >= 3
    lost = slices[len(slices) // 2]
    (copy / "backups" / "oplog" / lost["fileName"]).unlink()
    with pytest.raises(JobFailed) as gap:
        _restore(
            history,
            settings_for(history.target.uri, copy),
            point=PointTarget.to_time(f"{lost['last']['t']}:{lost['last']['i']}"),
        )
    before = slices[len(slices) // 2 - 1]["last"]
    assert "falls in a gap of the oplog archive (slice-missing" in str(gap.value)
    assert f"the latest before it is {before['t']}:{before['i']}" in str(gap.value)


def test_a_point_after_the_last_entry_up_to_the_caught_up_time_is_the_state_at_the_last_entry(
    history: History,
) -> None:
    """A quiet server: nothing written after the last entry, the archiver caught up past it. A point a
    second later restores (to the last entry); one past the caught-up time is refused naming it; a CLI
    restore in another process sees the same window (the archiver recorded it beside the slices)."""
    last, caught_up = history.last_entry, caught_up_position(history.settings)
    assert last is not None and caught_up is not None and caught_up.time > last.time
    after = optime.iso(Timestamp(last.time + 1, 0))
    result = _restore(history, point=PointTarget.to_time(after))
    assert _restored(history) == history.final
    assert (result["pointInTime"]["endPoint"]["t"], result["pointInTime"]["endPoint"]["i"]) == (
        last.time,
        last.inc,
    )
    window = pitr_status(history.settings, server="not read")["windows"][-1]
    assert window["end"] == optime.as_json(caught_up) and window["lastEntry"] == optime.as_json(last)
    assert window["caughtUp"] is True
    beyond = optime.iso(Timestamp(caught_up.time + 1, 0))
    with pytest.raises(JobFailed) as refused:
        _restore(history, point=PointTarget.to_time(beyond))
    assert f"the latest before it is {caught_up.time}:{caught_up.inc} ({optime.iso(caught_up)})" in str(
        refused.value
    )
    done = run_cli(history.target_settings(), "restore", "--to-time", after, "--dry-run", "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"end point: {last.time}:{last.inc}" in done.stdout
    status = run_cli(history.settings, "pitr", "status")
    assert status.returncode == 0, status.stderr
    assert f" .. {optime.iso(caught_up)} (" in status.stdout  # the window's end: the caught-up second
    assert f"(caught up; its last entry {optime.iso(last)})" in status.stdout


async def test_the_api_restores_to_a_point_and_refuses_outside_the_window(
    history: History, aiohttp_client: Any
) -> None:
    settings = settings_for(history.target.uri, history.root, admin_token="a" * 32)
    headers = {"Authorization": f"Bearer {'a' * 32}"}
    client = await aiohttp_client(create_app(Sidecar(settings)))
    text, expected = history.points["indexed"]
    with pymongo.MongoClient(history.target.uri) as mongo:
        mongo.drop_database(DB)
    resp = await client.post(
        "/api/backup/restore?wait=true", json={"pointInTime": text, "safetyBackup": False}, headers=headers
    )
    body = await resp.json()
    assert resp.status == 200, body
    point = body["restore"]["pointInTime"]
    assert point["baseBackup"] == history.base["fileName"] and point["slices"]
    assert point["endPoint"]["t"] == parse_position(text).time
    assert point["replay"]["namespaces"][f"{DB}.patients"]["createIndexes"] == 1
    assert _restored(history) == expected
    # the same second as epoch seconds and as a relative time: the CLI's parser (time_input)
    second = parse_iso(history.seconds["indexed"])
    for given in (f"@{int(second.timestamp())}", "now-1m30s", "2024-12-01T00:00"):
        with clock.set_to(second + dt.timedelta(seconds=90)):
            resp = await client.post(
                "/api/backup/restore?wait=true", json={"pointInTime": given, "dryRun": True}, headers=headers
            )
        body = await resp.json()
        if given.startswith("2024"):  # the API wants the zone written (no SIDECAR_TIMEZONE reading)
            assert resp.status == 400
            assert "field pointInTime: '2024-12-01T00:00' has no time zone" in body["error"]["message"]
            continue
        assert resp.status == 200, body
        target = body["restore"]["pointInTime"]["target"]
        assert (target["given"], target["time"]) == (given, history.seconds["indexed"])
    end = history.base["oplog"]["end"]
    resp = await client.post(
        "/api/backup/restore?wait=true", json={"beforeOp": f"{end['t'] - 5}:0"}, headers=headers
    )
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "point_not_restorable"
    assert f"the earliest after it is {end['t']}:{end['i']}" in body["error"]["message"]
    assert body["error"]["nearest"]["after"] == {**end, "time": optime.iso(optime.from_json(end))}
    assert body["error"]["nearest"]["before"] is None


def _cli_environment(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings a `sidecar restore` of the history reads: its target server and backup folder."""
    for key, value in {
        "SIDECAR_MONGODB_URI": history.target.uri,
        "SIDECAR_BACKUP_DIR": str(history.settings.backup_dir),
        "SIDECAR_MIN_FREE_BYTES": "0",
        "SIDECAR_PITR": "off",
    }.items():
        monkeypatch.setenv(key, value)


def test_cli_restore_to_time_prints_the_plan(history: History, monkeypatch, capsys) -> None:
    _cli_environment(history, monkeypatch)
    label = "delete-many"
    assert cli_main(["restore", "--to-time", history.seconds[label], "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"base backup: {history.base['fileName']}" in out
    assert f"  {DB}.patients: " in out and "5 deletes" in out
    assert f"end point: {parse_position(history.points[label][0]).time}:" in out
    assert out.strip().endswith("nothing was written")
    # the same second as a local time without a zone, read in --tz
    seoul = parse_iso(history.seconds[label]).astimezone(zoneinfo.ZoneInfo("Asia/Seoul"))
    local = f"{seoul:%Y-%m-%d %H:%M:%S}"
    assert cli_main(["restore", "--to-time", local, "--tz", "Asia/Seoul", "--dry-run", "--quiet"]) == 0
    assert f"end point: {parse_position(history.points[label][0]).time}:" in capsys.readouterr().out
    # the runbook's "5 minutes ago" as written (docs/pitr-restore.ko.md, 절차 2; verify-restore.md)
    with clock.set_to(parse_iso(history.seconds[label]) + dt.timedelta(minutes=5)):
        assert cli_main(["restore", "--to-time", "now-5m", "--dry-run"]) == 0
    assert f"end point: {parse_position(history.points[label][0]).time}:" in capsys.readouterr().out
    # a refused time names the flag that was used, and only that one
    for flag, text, said in (
        ("--to-time", "2999-01-01T00:00:00Z", "is outside the times an oplog position can hold"),
        ("--to-time", "now+5m", "is in the future"),
        ("--before-op", "2024-12-01T14:31:06Z", "is not an oplog position"),
    ):
        assert cli_main(["restore", flag, text, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{flag}: '{text}' {said}" in err and err.count("--") == 1, err
    assert cli_main(["restore", "--before-op", "1:1", "--quiet"]) == 1
    assert "the earliest after it is" in capsys.readouterr().err


def test_the_mongorestore_engine_restores_the_base_and_the_slices_are_replayed(history: History) -> None:
    if shutil.which("mongorestore") is None:
        pytest.skip("the stock mongorestore is not on PATH (bash deploy/local.sh test puts it there)")
    text, expected = history.points["transaction"]
    result = _restore(history, point=PointTarget.to_time(text), engine="mongorestore")
    assert result["engine"] == "mongorestore" and result["pointInTime"]["replay"]["transactions"] == 1
    assert _restored(history) == expected


def _operations_after(history: History, after: Timestamp, last: Timestamp) -> Counter[str]:
    """Namespace -> the source server's oplog operations in ``(after, last]`` on it (a transaction's
    one by one; a command on the collection it names), read from the server, not the archive."""
    found: Counter[str] = Counter()
    with pymongo.MongoClient(history.source.uri) as client:
        for entry in oplog(client).find({"ts": {"$gt": after, "$lte": last}}):
            inner = entry["o"].get("applyOps") if entry["op"] == "c" else None
            for op in inner if inner is not None else [entry]:
                db, _, coll = op["ns"].partition(".")
                if op["op"] == "c" and coll == "$cmd":
                    coll = next(iter(op["o"].values()))
                if op["op"] in "iudc" and db == DB:
                    found[f"{db}.{coll}"] += 1
    return found


def test_a_drop_restore_counts_the_later_writes_it_discards(history: History, monkeypatch, capsys) -> None:
    _restore(history, point=PointTarget.to_time(history.points["dropped"][0]))  # data in the target
    text, _ = history.points["updated"]
    last = SliceCatalog(oplog_dir(history.settings)).last_position()
    assert last is not None
    expected = _operations_after(history, parse_position(text), last)
    assert expected[f"{DB}.patients"] >= 8 and expected[f"{DB}.scratch"] == 1  # the script's, at least
    target = PointTarget.to_time(text)

    dry = _restore(history, fresh=False, drop=True, dry_run=True, point=target)
    discarded = dry["pointInTime"]["discarded"]
    assert discarded["namespaces"] == dict(expected) and discarded["total"] == expected.total()
    assert len(discarded["operations"]) == min(20, expected.total())
    on = ", ".join(f"{ns} ({n:,})" for ns, n in sorted(expected.items()))
    assert dry["warnings"] == [
        f"{expected.total()} writes on {on} after {text} would be discarded (--drop replaces those "
        f"namespaces); they stay in the oplog archive"
    ]

    with job_log() as tail:
        only = _restore(
            history, fresh=False, drop=True, safety_backup=True, point=target, ns_include=[f"{DB}.patients"]
        )
    patients = expected[f"{DB}.patients"]
    assert only["pointInTime"]["discarded"]["namespaces"] == {f"{DB}.patients": patients}
    assert only["warnings"] == [
        f"{patients} writes on {DB}.patients after {text} will be discarded (--drop replaces those "
        f"namespaces); they stay in the safety backup {only['safetyBackup']} and in the oplog archive"
    ]
    (said,) = tail.query(level="WARNING", text="will be discarded")  # before the first write
    assert said["message"] == f"restore job {said['jobId']}: {only['warnings'][0]}"
    kept = _restore(history, fresh=True, point=target, dry_run=True)  # no --drop: nothing discarded
    assert "discarded" not in kept["pointInTime"] and "warnings" not in kept

    _cli_environment(history, monkeypatch)
    _restore(history, point=PointTarget.to_time(history.points["dropped"][0]))
    assert cli_main(["restore", "--to-time", text, "--drop", "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    shown = f"the first {min(20, expected.total())} of {expected.total()}"
    assert f"writes after the point that --drop would discard ({shown}):" in out
    assert f"warning: {dry['warnings'][0]}" in out


def test_the_replay_reports_progress_toward_its_planned_total(history: History, monkeypatch, capsys) -> None:
    text, expected = history.points["indexed"]
    with pymongo.MongoClient(history.target.uri) as client:
        client.drop_database(DB)
    # in oplog order, so that every entry is a step (the parallel writers': tests/test_progress.py)
    service = BackupService(history.target_settings().replace(pitr_replay_writers=0))
    job = service.new_job("restore")
    seen: list[tuple[int, int, Timestamp | None]] = []
    advance = job.progress.advance

    def record(count: int, position: Timestamp | None = None) -> None:  # the replay's hook
        advance(count, position)
        if job.progress.phase == "oplog-replay":
            seen.append((job.progress.done, job.progress.total, job.progress.position))

    job.progress.advance = record  # type: ignore[method-assign]
    result = service.run_restore(job, point=PointTarget.to_time(text), safety_backup=False)
    assert _restored(history) == expected
    point = result["pointInTime"]
    total = point["planned"]["entries"]
    assert len(seen) > 1 and {t for _, t, _ in seen} == {total} and total == point["replay"]["entries"]
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and done[-1] == total
    positions = [p for _, _, p in seen if p is not None]
    assert positions == sorted(positions) and positions[-1] == parse_position(point["replay"]["lastTs"])
    shown = job.as_json()["progress"]
    assert (shown["unit"], shown["done"], shown["total"], shown["ratio"]) == ("entries", total, total, 1.0)
    assert shown["pointReached"]["t"] == point["endPoint"]["t"] and shown["etaSeconds"] == 0

    _cli_environment(history, monkeypatch)
    with pymongo.MongoClient(history.target.uri) as client:
        client.drop_database(DB)
    assert cli_main(["restore", "--to-time", text, "--quiet", "--no-safety-backup"]) == 0
    base = sum(ns["documents"] for ns in history.base["namespaces"].values())
    operations = point["replay"]["operations"]
    assert f"({base} documents from the base, {operations} operations replayed;" in capsys.readouterr().out


async def test_the_api_returns_the_writes_a_drop_restore_discards(
    history: History, aiohttp_client: Any
) -> None:
    text, _ = history.points["updated"]
    expected = _restore(history, fresh=False, drop=True, dry_run=True, point=PointTarget.to_time(text))
    settings = settings_for(history.target.uri, history.root, admin_token="a" * 32)
    client = await aiohttp_client(create_app(Sidecar(settings)))
    resp = await client.post(
        "/api/backup/restore?wait=true",
        json={"pointInTime": text, "drop": True, "dryRun": True},
        headers={"Authorization": f"Bearer {'a' * 32}"},
    )
    body = await resp.json()
    assert resp.status == 200, body
    discarded = body["restore"]["pointInTime"]["discarded"]
    assert discarded["total"] == expected["pointInTime"]["discarded"]["total"] > 0
    assert discarded["namespaces"] == expected["pointInTime"]["discarded"]["namespaces"]
    assert body["restore"]["warnings"] == expected["warnings"]
