"""Retention, off-site copies and content checks of oplog slices, over a simulated 40 days: slices with
past timestamps written through the real writer (gzip, age, sha256, fsync) and base backups recorded
with past times and oplog cuts in the real catalog; pruned through the prune job, against the real
SeaweedFS bucket. The history ends the day before NOW, a set date; the prune runs with the clock set to
it (the bucket's signer keeps the real time)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import bson
import pymongo
import pyrage
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.offsite import SliceCopies
from sidecar.pitr.record.retention import Base, oldest_left, plan_slices
from sidecar.pitr.record.slice_check import check_slice
from sidecar.pitr.record.slices import (
    SLICE_NAME,
    SliceBuffer,
    oplog_dir,
    read_entries,
    slice_bucket,
    slice_source,
    write_slice,
)
from sidecar.pitr.status import pitr_status
from sidecar.service import BackupService
from sidecar.service.prune import prune
from sidecar.store.catalog import archive_name
from sidecar.store.offsite import policies
from sidecar.store.retention import Removal, keep_reasons
from sidecar.text import iso_utc
from tests import s3_fixture
from tests.helpers import settings_for
from tests.pitr_support import archiving, stored_digest, wait_for_slices

seaweed, s3_env = s3_fixture.seaweed, s3_fixture.s3_env  # the fixtures, for pytest to find
PREFIX = "ward-7/"
DAYS, SIX_HOURS = 40, 6 * 3600
NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)  # a Wednesday (21:00 in Asia/Seoul, the default zone)
DAY0 = dt.datetime(2026, 12, 8, tzinfo=dt.UTC)  # the day before, 00:00: the history's last day


@pytest.fixture
def at_now() -> Iterator[dt.datetime]:
    with clock.set_to(NOW) as now:
        yield now


def noop(ts: Timestamp, ns: str = "ward.notes") -> RawBSONDocument:
    """An oplog entry as the server writes one (a no-op carries a message)."""
    wall = dt.datetime.fromtimestamp(ts.time, dt.UTC)
    return RawBSONDocument(
        bson.encode({"op": "n", "ns": ns, "o": {"msg": "x"}, "ts": ts, "t": 1, "wall": wall})
    )


def add_slice(settings: Settings, start: int, prev: Timestamp | None) -> dict:
    """A slice of three entries over six hours from ``start`` (epoch s), through the real writer."""
    buffer = SliceBuffer(prev)
    for offset in (1, SIX_HOURS // 2, SIX_HOURS):
        ts = Timestamp(start + offset, 1)
        buffer.add(noop(ts), ts)
    entry = write_slice(settings, buffer)
    SliceCatalog(oplog_dir(settings)).add_slice(entry)
    return entry


def history(settings: Settings, *, gap_days: tuple[int, ...] = ()) -> tuple[list[dict], list[dict]]:
    """40 days of slices (four a day, to yesterday's end) and one base backup a day at 02:00 (its cut
    02:00 minus 30 s .. 02:00), oldest first. A rollover gap is recorded at the start of each day of
    ``gap_days`` (days before DAY0): the slice after it joins nothing."""
    oplog_dir(settings).mkdir(parents=True, exist_ok=True)  # as the archiver makes it
    catalog, service = SliceCatalog(oplog_dir(settings)), BackupService(settings)
    slices, prev = [], None
    start = int((DAY0 - dt.timedelta(days=DAYS)).timestamp())
    while start < int((DAY0 + dt.timedelta(days=1)).timestamp()):
        day = (DAY0.date() - dt.datetime.fromtimestamp(start, dt.UTC).date()).days
        if prev is not None and day in gap_days and start % 86400 == 0:
            gap = {"from": optime.as_json(prev), "to": {"t": start + 1, "i": 1}, "cause": "oplog-rollover"}
            catalog.add_gap({**gap, "detail": "simulated"})
            prev = None
        entry = add_slice(settings, start, prev)
        slices.append(entry)
        prev, start = optime.from_json(entry["last"]), start + SIX_HOURS
    bases = []
    for age in range(DAYS - 1, -1, -1):
        point = DAY0 - dt.timedelta(days=age) + dt.timedelta(hours=2)
        name = archive_name(settings.file_prefix, point)
        (settings.backup_dir / name).write_bytes(b"base")
        t = int(point.timestamp())
        base = {
            "fileName": name,
            "createdAt": iso_utc(point + dt.timedelta(minutes=5)),
            "status": "completed",
            "sizeBytes": 4,
            "oplog": {"start": {"t": t - 30, "i": 1}, "end": {"t": t, "i": 1}, "entries": 2},
        }
        service.catalog.add(base)
        bases.append(base)
    return slices, bases


def retained(settings: Settings, bases: list[dict], destination: str) -> list[dict]:
    """The bases the destination's archive policy keeps (store/retention.py, tested on its own)."""
    tz = zoneinfo.ZoneInfo(settings.timezone)
    kept = keep_reasons(bases, NOW, policies(settings)[destination], tz)
    return [b for b in bases if b["fileName"] in kept]


def base_name(settings: Settings, age: int) -> str:
    """The base backup of ``age`` days before DAY0."""
    return archive_name(settings.file_prefix, DAY0 - dt.timedelta(days=age) + dt.timedelta(hours=2))


def after_oldest(slices: list[dict], bases: list[dict]) -> set[str]:
    """The expectation without SIDECAR_PITR_RETENTION_DAYS: every slice from the oldest retained base's
    cut onward."""
    start = min(b["oplog"]["start"]["t"] for b in bases)
    return {s["fileName"] for s in slices if s["last"]["t"] >= start}


def local_files(settings: Settings) -> set[str]:
    return {p.name for p in oplog_dir(settings).glob("oplog-*") if SLICE_NAME.fullmatch(p.name)}


@pytest.fixture
def identity(tmp_path: Path) -> tuple[str, str]:
    key = pyrage.x25519.Identity.generate()
    path = tmp_path / "age.key"
    path.write_text(f"{key}\n")
    return str(key.to_public()), str(path)


def test_forty_days_keep_exactly_what_the_retained_backups_need_locally_and_in_the_bucket(
    make_settings, s3_env, identity, at_now
):
    recipient, identity_file = identity
    settings = make_settings(
        retention_days=30,
        retention_min_count=1,
        s3_endpoint=s3_env.endpoint,
        s3_bucket=s3_env.bucket,
        s3_prefix=PREFIX,
        s3_retention_days=5,
        s3_retention_min_count=1,
        s3_retention_keep_weekly=6,
        age_recipients=recipient,
        age_identity_file=identity_file,
    )
    slices, bases = history(settings, gap_days=(DAYS, 2))
    tz = zoneinfo.ZoneInfo(settings.timezone)
    assert keep_reasons(bases, NOW, policies(settings)["local"], tz) == {
        base_name(settings, 0): "one of the newest 1",
        **{base_name(settings, age): "younger than 30 days" for age in range(1, 29)},
    }
    weeks = {9: "2026-W48", 16: "2026-W47", 23: "2026-W46", 30: "2026-W45"}  # Sundays; W49, W50 are younger
    assert keep_reasons(bases, NOW, policies(settings)["s3"], tz) == {
        base_name(settings, 0): "one of the newest 1",
        **{base_name(settings, age): "younger than 5 days" for age in range(1, 4)},
        **{base_name(settings, age): f"weekly tier ({week})" for age, week in weeks.items()},
    }
    keep_local = after_oldest(slices, retained(settings, bases, "local"))
    keep_s3 = after_oldest(slices, retained(settings, bases, "s3"))
    assert keep_local < keep_s3 < {s["fileName"] for s in slices}  # the bucket's tiers reach further back
    assert all(s["fileName"].endswith(".bson.gz.age") for s in slices)
    service = BackupService(settings)
    planned = [r for r in service.plan_prune() if r.kind == "slice"]
    # a dry run uploads nothing: the slices the bucket wants but lacks keep their only (local) copy
    assert {r.file_name for r in planned} == {s["fileName"] for s in slices} - keep_local - keep_s3
    assert all("before the window of the oldest retained base backup" in r.reason for r in planned)

    service.run_prune()
    assert local_files(settings) == keep_local
    bucket_keys = {k.removeprefix(f"{PREFIX}oplog/") for k in s3_env.keys(f"{PREFIX}oplog/")}
    assert bucket_keys == keep_s3
    document = SliceCatalog(oplog_dir(settings)).load()
    assert document["deleting"] == {}
    by_name = {s["fileName"]: s for s in document["slices"]}
    assert set(by_name) == keep_local | keep_s3
    for name, entry in by_name.items():
        wanted = {d for d, keep in (("local", keep_local), ("s3", keep_s3)) if name in keep}
        assert set(entry["locations"]) == wanted
        remote = entry["remote"]["s3"]
        assert remote["sha256"] == entry["sha256"] and remote["sizeBytes"] == entry["sizeBytes"]
    # the gap 40 days back went with its slices; the one two days back is in the window and stays
    gaps = pitr_status(settings, deep=True, server="not asked")["gaps"]
    assert [(g["cause"], g["to"]["t"]) for g in gaps] == [
        ("oplog-rollover", int(DAY0.timestamp()) - 2 * 86400 + 1)
    ]
    assert [r for r in service.plan_prune() if r.kind == "slice"] == []

    # a slice kept only in the bucket is read (and verified) from there, decrypted
    only_s3 = min(keep_s3 - keep_local)
    written = next(s for s in slices if s["fileName"] == only_s3)
    raws = read_entries(settings, oplog_dir(settings) / only_s3, by_name[only_s3])
    assert [bson.decode(r)["ts"] for r in raws] == [
        optime.from_json(written["first"]),
        Timestamp(written["first"]["t"] - 1 + SIX_HOURS // 2, 1),
        optime.from_json(written["last"]),
    ]
    source = slice_source(settings, oplog_dir(settings) / only_s3, by_name[only_s3])
    assert source.location == "s3" and check_slice(source, written) is None


def test_a_shorter_pitr_retention_keeps_the_window_and_every_retained_backups_cut(make_settings, at_now):
    settings = make_settings(retention_days=30, retention_min_count=1, pitr_retention_days=7)
    slices, bases = history(settings)
    kept_bases = retained(settings, bases, "local")
    cutoff = (NOW - dt.timedelta(days=7)).timestamp()
    before = [b for b in kept_bases if b["oplog"]["end"]["t"] < cutoff]
    opens = before[-1]["oplog"]["start"]["t"]  # the base whose window reaches over the cutoff
    expected = {s["fileName"] for s in slices if s["last"]["t"] >= opens}
    for base in kept_bases:  # each retained base keeps the slice that holds its cut
        start, end = base["oplog"]["start"]["t"], base["oplog"]["end"]["t"]
        expected |= {s["fileName"] for s in slices if s["last"]["t"] >= start and s["first"]["t"] <= end}
    service = BackupService(settings)
    service.run_prune()
    assert local_files(settings) == expected
    assert {s["fileName"] for s in SliceCatalog(oplog_dir(settings)).slices()} == expected
    assert len(expected) < len(after_oldest(slices, kept_bases))  # shorter than the backups' retention


def test_a_crash_between_catalog_and_files_leaves_no_entry_without_its_file(make_settings, at_now):
    settings = make_settings(retention_days=30, retention_min_count=1)
    slices, bases = history(settings)
    expected = after_oldest(slices, retained(settings, bases, "local"))
    service = BackupService(settings)

    def crash() -> None:
        raise RuntimeError("killed between the catalog and the files")

    with pytest.raises(RuntimeError, match="killed"):
        prune(service, dry_run=False, between=crash)
    catalog = SliceCatalog(oplog_dir(settings))
    listed = {s["fileName"] for s in catalog.slices()}
    assert listed == expected  # the catalog no longer holds the dropped slices...
    assert listed < local_files(settings)  # ...whose files are still there, marked for deletion
    assert set(catalog.load()["deleting"]) == local_files(settings) - expected
    assert all((oplog_dir(settings) / name).is_file() for name in listed)
    reasons = {r.reason for r in service.plan_prune() if r.kind == "slice"}
    assert reasons == {"finishing a deletion that was interrupted"}
    service.run_prune()
    assert local_files(settings) == expected and catalog.load()["deleting"] == {}


def rewrite(settings: Settings, entry: dict, change) -> None:
    """Change the slice's entries, store them gzip'd again and give the catalog the new sha256/size."""
    path = oplog_dir(settings) / entry["fileName"]
    data = bytearray(gzip.decompress(path.read_bytes()))
    change(data)
    path.write_bytes(gzip.compress(bytes(data)))
    catalog = SliceCatalog(oplog_dir(settings))
    catalog.set_fields(entry["fileName"], sha256=stored_digest(path), sizeBytes=path.stat().st_size)


def _entry_at(data: bytearray, index: int) -> int:
    pos = 0
    for _ in range(index):
        pos += int.from_bytes(data[pos : pos + 4], "little")
    return pos


def _earlier_ts(data: bytearray) -> None:
    """The third entry's ts becomes the first's: out of order."""
    third, first = _entry_at(data, 2), data.find(b"\x11ts\x00")
    at = data.find(b"\x11ts\x00", third)
    data[at + 4 : at + 12] = data[first + 4 : first + 12]


def _bad_type(data: bytearray) -> None:
    """The second entry's first element gets a type byte BSON does not have."""
    data[_entry_at(data, 1) + 4] = 0x42


def _other_namespace(data: bytearray) -> None:
    at = data.find(b"ward.notes", _entry_at(data, 1))
    data[at : at + 10] = b"ward.nodes"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_earlier_ts, "is not after the one before it"),
        (_bad_type, "is not a valid BSON document"),
        (_other_namespace, "namespaces of its entries"),
    ],
)
def test_verification_checks_the_content_not_only_the_sha256(make_settings, change, said):
    settings = make_settings()
    oplog_dir(settings).mkdir(parents=True)
    start = int((DAY0 - dt.timedelta(days=1)).timestamp())
    first = add_slice(settings, start, None)
    second = add_slice(settings, start + SIX_HOURS, optime.from_json(first["last"]))
    assert pitr_status(settings, deep=True, server="not asked")["gaps"] == []
    rewrite(settings, second, change)
    assert pitr_status(settings, server="not asked")["gaps"] == []  # size and sha256 agree again
    entry = SliceCatalog(oplog_dir(settings)).slices()[1]
    problem = check_slice(slice_source(settings, oplog_dir(settings) / entry["fileName"]), entry)
    assert problem is not None and said in problem
    gaps = pitr_status(settings, deep=True, server="not asked")["gaps"]
    assert [(g["cause"], g["files"]) for g in gaps] == [("slice-damaged", [second["fileName"]])]
    assert said in gaps[0]["detail"]


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ({"prev": "first"}, "entry 1 ({t}.1) is not after the one before it"),  # it follows its own entry
        ({"entries": 4}, "3 entries, the catalog says 4"),
        ({"rawBytes": 1}, "{raw} bytes of entries, the catalog says 1"),
        ({"namespaces": {"ward.notes": 2}}, "the namespaces of its entries are not the catalog's"),
    ],
)
def test_a_slice_that_disagrees_with_its_catalog_entry_is_named_exactly(make_settings, edit, said):
    """The stored bytes are sound (the sha256 agrees): the catalog entry says something else."""
    settings = make_settings()
    oplog_dir(settings).mkdir(parents=True)
    start = int((DAY0 - dt.timedelta(days=1)).timestamp())
    entry = add_slice(settings, start, Timestamp(start, 1))
    claimed = {**entry, **{k: entry[v] if v == "first" else v for k, v in edit.items()}}
    source = slice_source(settings, oplog_dir(settings) / entry["fileName"])
    assert check_slice(source, entry) is None
    assert check_slice(source, claimed) == said.format(t=start + 1, raw=entry["rawBytes"])


def test_the_running_archiver_uploads_each_slice_soon_after_it_is_cut(own_server, tmp_path, s3_env):
    """The real archiver on a private server: every slice reaches the bucket, checked and recorded,
    while the archiver runs; the bucket's bytes are the slice's."""
    settings = settings_for(
        own_server.uri,
        tmp_path,
        pitr="auto",
        pitr_slice_seconds=0.2,
        s3_endpoint=s3_env.endpoint,
        s3_bucket=s3_env.bucket,
        s3_prefix=PREFIX,
    )
    catalog = SliceCatalog(oplog_dir(settings))
    with pymongo.MongoClient(own_server.uri) as client, archiving(settings) as runner:
        deadline = time.monotonic() + 30
        while not runner.state.running:  # tailing: what is written now is archived
            assert time.monotonic() < deadline and runner.fatal is None, runner.fatal
            time.sleep(0.05)
        for k in range(3):
            client.ward.notes.insert_one({"k": k})
            wait_for_slices(settings, k + 1)
        deadline = time.monotonic() + 30
        while not all("s3" in s.get("locations", []) for s in catalog.slices()):
            assert time.monotonic() < deadline, "the slices did not reach the bucket"
            time.sleep(0.1)
    bucket = s3_env.client()
    for entry in catalog.slices():
        key = entry["remote"]["s3"]["key"]
        assert key == f"{PREFIX}oplog/{entry['fileName']}"
        body = bucket.get_object(Bucket=s3_env.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == entry["remote"]["s3"]["sha256"]


def test_the_slice_a_stop_stores_is_in_the_bucket_when_the_stop_returns(own_server, tmp_path, s3_env):
    """A stop (SIGTERM of `serve` or `pitr stream`) stores the slice the archiver holds; the uploader
    then runs one more round, so that slice is off-site before the process exits, not only after the
    next start."""
    settings = settings_for(
        own_server.uri,
        tmp_path,
        pitr="auto",
        pitr_slice_seconds=3600,  # nothing is cut while it runs: only the stop stores the slice
        s3_endpoint=s3_env.endpoint,
        s3_bucket=s3_env.bucket,
        s3_prefix=f"stop-{tmp_path.name}/",
    )
    with pymongo.MongoClient(own_server.uri) as client, archiving(settings) as runner:
        deadline = time.monotonic() + 30
        while not runner.state.running:
            assert time.monotonic() < deadline and runner.fatal is None, runner.fatal
            time.sleep(0.05)
        client.ward.notes.insert_many([{"k": k} for k in range(20)])
        newest = client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]
        time.sleep(2)  # the tail has handed out the inserts and waited: the open slice is complete
        assert not SliceCatalog(oplog_dir(settings)).slices()
    (entry,) = SliceCatalog(oplog_dir(settings)).slices()
    assert entry["last"] == optime.as_json(newest) and "s3" in entry["locations"], entry
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key=entry["remote"]["s3"]["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]


def test_a_slices_last_copy_stays_while_a_destination_that_wants_it_lacks_it() -> None:
    """Pure, on plan_slices: the disk lets a slice go that the bucket wants but does not hold yet (its
    upload is pending): the local copy stays. Once the bucket holds it, or wants it no more, it goes."""
    old, new = "oplog-1-1.bson.gz", "oplog-2-1.bson.gz"

    def document(where: list[str]) -> dict:
        rows = [(old, where, 1), (new, ["local", "s3"], 2)]
        return {
            "slices": [
                {
                    "fileName": n,
                    "locations": w,
                    "createdAt": "",
                    "first": {"t": t, "i": 1},
                    "last": {"t": t, "i": 2},
                }
                for n, w, t in rows
            ]
        }

    base = Base("b.gz", Timestamp(2, 1), Timestamp(2, 2))
    bases = {"local": [base], "s3": [base]}
    wanted_by_bucket = {"local": {new: "newest"}, "s3": {old: "weekly", new: "newest"}}
    assert plan_slices(document(["local"]), wanted_by_bucket, bases) == []
    (removal,) = plan_slices(document(["local", "s3"]), wanted_by_bucket, bases)
    assert (removal.file_name, removal.destination) == (old, "local")
    assert "before the window of the oldest retained base backup b.gz" in removal.reason
    wanted_nowhere = {"local": {new: "newest"}, "s3": {new: "newest"}}
    (removal,) = plan_slices(document(["local"]), wanted_nowhere, bases)
    assert (removal.file_name, removal.destination) == (old, "local")


def _slices(*spans: tuple[int, int], where: tuple[str, ...] = ("local",)) -> list[dict]:
    return [
        {"fileName": f"oplog-{a}.1-{b}.1.bson.gz", "first": {"t": a, "i": 1}, "last": {"t": b, "i": 1}}
        | {"locations": list(where), "createdAt": "2026-12-01T00:00:00.000Z"}
        for a, b in spans
    ]


def test_the_reasons_a_slice_goes_are_exact() -> None:
    """Up to the oldest base's consistent point (inclusive: a slice ending there holds nothing of its
    window) it is 'before the window'; elsewhere, outside every kept window and cut."""
    slices = _slices((1, 10), (11, 20), (21, 30), (31, 40))
    base = Base("maekcord-backup-a.gz", None, Timestamp(20, 1))  # no cut recorded: its point only
    later = Base("maekcord-backup-b.gz", Timestamp(29, 1), Timestamp(30, 1))
    keep = {"local": {slices[2]["fileName"]: "cut", slices[3]["fileName"]: "newest"}}
    removals = plan_slices({"slices": slices}, keep, {"local": [base, later]})
    point = optime.iso(Timestamp(20, 1))
    assert [(r.file_name, r.status, r.kind, r.reason) for r in removals] == [
        (
            s["fileName"],
            "slice",
            "slice",
            f"before the window of the oldest retained base backup {base.name} ({point})",
        )
        for s in slices[:2]
    ]
    keep = {"local": {slices[0]["fileName"]: "cut", slices[3]["fileName"]: "newest"}}
    (removal, other) = plan_slices({"slices": slices}, keep, {"local": [Base("x.gz", None, Timestamp(5, 1))]})
    assert (
        removal.reason
        == other.reason
        == ("in no kept point-in-time window (SIDECAR_PITR_RETENTION_DAYS) and no retained backup's cut")
    )


def test_the_oldest_slice_left_is_the_first_with_a_copy_that_stays() -> None:
    slices = _slices((1, 10), (11, 20), (21, 30), where=("local", "s3"))
    document = {"slices": slices}
    first, second, third = (s["fileName"] for s in slices)
    assert oldest_left(document, {}) == Timestamp(1, 1)
    assert oldest_left(document, {first: ["local"]}) == Timestamp(1, 1)  # its bucket copy stays
    assert oldest_left(document, {first: ["local", "s3"], second: ["local", "s3"]}) == Timestamp(21, 1)
    assert oldest_left(document, {n: ["local", "s3"] for n in (first, second, third)}) is None


def test_slice_copies_go_from_each_place_and_one_that_cannot_go_stays_marked(make_settings, s3_env, caplog):
    """Removing slice copies: the bucket's through the bucket, the disk's from the directory; a copy
    that cannot be removed (here a directory where the file was) is logged by name and stays marked
    for the next prune, with its slice's other copies gone as planned."""
    settings = make_settings(s3_endpoint=s3_env.endpoint, s3_bucket=s3_env.bucket, s3_prefix=PREFIX)
    oplog_dir(settings).mkdir(parents=True)
    start = int((DAY0 - dt.timedelta(days=1)).timestamp())
    first = add_slice(settings, start, None)
    second = add_slice(settings, start + SIX_HOURS, optime.from_json(first["last"]))
    catalog, bucket = SliceCatalog(oplog_dir(settings)), slice_bucket(settings)
    for entry in (first, second):
        name = entry["fileName"]
        bucket.put_file(name, oplog_dir(settings) / name, expected_sha256=entry["sha256"])
        catalog.set_fields(name, locations=["local", "s3"])
    stuck = oplog_dir(settings) / second["fileName"]
    stuck.unlink()
    (stuck / "in-the-way").mkdir(parents=True)
    plan = [(first, "s3"), (first, "local"), (second, "local")]
    removals = [Removal(e["fileName"], "slice", e["createdAt"], "old", d, "slice") for e, d in plan]
    with caplog.at_level("INFO", logger="sidecar.pitr.record.offsite"):
        done = SliceCopies(settings).apply(removals)
    assert done == removals[:2]
    assert s3_env.keys(f"{PREFIX}oplog/") == [f"{PREFIX}oplog/{second['fileName']}"]
    assert not (oplog_dir(settings) / first["fileName"]).exists()
    document = catalog.load()
    assert [(s["fileName"], s["locations"]) for s in document["slices"]] == [(second["fileName"], ["s3"])]
    assert document["deleting"] == {second["fileName"]: ["local"]}
    assert [r.getMessage() for r in caplog.records if r.name == "sidecar.pitr.record.offsite"] == [
        f"retention could not remove slice {second['fileName']} from local: "
        f"[Errno 21] Is a directory: '{stuck}'",
        "retention removed 2 oplog slice copies",
    ]


def test_pitr_status_names_the_directory_the_slices_and_the_window_a_base_opens(make_settings):
    """The JSON of ``sidecar pitr status --json`` and GET /api/v1/pitr, over two slices and one base."""
    settings = make_settings()
    oplog_dir(settings).mkdir(parents=True)
    start = int((DAY0 - dt.timedelta(days=1)).timestamp())
    first = add_slice(settings, start, None)
    second = add_slice(settings, start + SIX_HOURS, optime.from_json(first["last"]))
    name = archive_name(settings.file_prefix, dt.datetime.fromtimestamp(start + 100, dt.UTC))
    (settings.backup_dir / name).write_bytes(b"base")
    cut = {"start": {"t": start + 50, "i": 1}, "end": {"t": start + 100, "i": 1}, "entries": 2}
    BackupService(settings).catalog.add(
        {"fileName": name, "createdAt": iso_utc(DAY0), "status": "completed", "sizeBytes": 4, "oplog": cut}
    )
    status = pitr_status(settings, state=PitrState(left_out=3), server="not asked")
    assert status["directory"] == str(oplog_dir(settings))
    assert status["slices"] == {
        "count": 2,
        "entries": 6,
        "sizeBytes": first["sizeBytes"] + second["sizeBytes"],
        "rawBytes": first["rawBytes"] + second["rawBytes"],
        "leftOutEntries": 0,
        "first": first["first"],
        "last": second["last"],
        "firstTime": first["firstWall"],
        "lastTime": second["lastWall"],
        "checked": "size",
    }
    assert status["archiver"]["leftOut"] == 3
    end = second["last"]
    assert status["windows"] == [
        {
            "start": cut["end"],
            "end": end,
            "startTime": optime.iso(optime.from_json(cut["end"])),
            "endTime": optime.iso(optime.from_json(end)),
            "seconds": end["t"] - cut["end"]["t"],
            "lastEntry": end,
            "lastEntryTime": optime.iso(optime.from_json(end)),
            "caughtUp": False,  # no archiver has said it read past its last entry
            "baseBackup": name,
            "backups": [name],
        }
    ]
