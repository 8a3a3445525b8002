"""``sidecar oplog find`` / ``GET /api/backup/oplog`` over slices the archiver wrote from a real
server's history: inserts, an update, a delete, a deleteMany of 421 documents, a drop, a database
dropped; found by namespace, operation, time and _id, mass deletes and drops grouped with the
``--before-op`` of their first entry, slices skipped by the catalog, bad parameters refused."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.api.app import create_app
from sidecar.api.state import Sidecar
from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.engine.replay.units import Cut
from sidecar.pitr.capture.tailer import oplog
from sidecar.pitr.find.later import later_writes
from sidecar.pitr.find.query import FindError, FindQuery
from sidecar.pitr.find.search import find_operations, undo
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import SliceBuffer, oplog_dir, write_slice
from tests.helpers import discard, run_cli, settings_for
from tests.pitr_support import archiving, wait_running, wait_until_stored

DB = "findhist"
PATIENTS = f"{DB}.patients"
READ = "read-token-for-find-tests-0123456"
OID = ObjectId()
SEOUL = dt.timezone(dt.timedelta(hours=9))


def pos(ts: Timestamp) -> str:
    return f"{ts.time}:{ts.inc}"


class History:
    """The scripted history, archived, with the positions the tests expect."""

    def __init__(self, settings: Settings, client: pymongo.MongoClient, api: Settings):
        self.settings = settings
        self.api = api  # the same directory without an archiver (the app would start one)
        self.positions: dict[str, Timestamp] = {}
        self.client = client

    def entry(self, name: str, query: dict[str, Any]) -> None:
        """The oplog position of the entry (or the applyOps entry holding it) that ``query`` names."""
        nested = {"o.applyOps": {"$elemMatch": query}}
        found = oplog(self.client).find_one({"$or": [query, nested]}, sort=[("$natural", 1)])
        assert found is not None, query
        self.positions[name] = found["ts"]


def _script(client: pymongo.MongoClient, settings: Settings, history: History) -> None:
    db = client[DB]
    db.other.insert_many([{"_id": n} for n in range(30)])
    wait_until_stored(settings, client)
    db.patients.insert_many([{"_id": n, "name": f"p{n}"} for n in range(1, 451)])
    db.patients.insert_one({"_id": OID, "name": "oid"})
    db.patients.update_one({"_id": 7}, {"$set": {"name": "kim"}})
    db.patients.delete_one({"_id": 5})
    db.patients.insert_one({"_id": 1000})
    db.patients.delete_many({"_id": {"$gte": 20, "$lte": 440}})
    db.visits.insert_many([{"_id": 1}, {"_id": 2}])
    db.visits.drop()
    client[f"{DB}scratch"].a.insert_one({"_id": 1})
    client[f"{DB}scratch"].b.insert_one({"_id": 1})
    client.drop_database(f"{DB}scratch")
    wait_until_stored(settings, client)
    history.entry("update", {"op": "u", "ns": PATIENTS, "o2._id": 7})
    history.entry("first_delete", {"op": "d", "ns": PATIENTS, "o._id": 20})
    history.entry("last_delete", {"op": "d", "ns": PATIENTS, "o._id": 440})
    history.entry("drop_visits", {"op": "c", "ns": f"{DB}.$cmd", "o.drop": "visits"})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history written once, on SIDECAR_TEST_MONGODB_URI's server or a fresh embedded one."""
    root = tmp_path_factory.mktemp("find")
    given = os.environ.get("SIDECAR_TEST_MONGODB_URI")
    server = None if given else EmbeddedServer(root / "data").start()
    uri = given or server.uri  # type: ignore[union-attr]
    settings = settings_for(
        uri, root, pitr="auto", pitr_slice_seconds=0.2, pitr_slice_max_bytes=8192, read_token=READ
    )
    try:
        with pymongo.MongoClient(uri) as client:
            for name in (DB, f"{DB}scratch"):
                client.drop_database(name)
            recorded = History(settings, client, settings_for(uri, root, read_token=READ))
            with archiving(settings) as runner:
                wait_running(runner)
                _script(client, settings, recorded)
            yield recorded
    finally:
        if server is not None:
            discard(server)


def find(history: History, **params: Any) -> dict[str, Any]:
    ns = params.pop("ns", None)
    return find_operations(history.settings, FindQuery.parse([ns] if ns else [], **params))


def groups(listing: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in listing["items"] if i["kind"] == "group"]


def test_a_namespace_lists_its_history_with_the_mass_delete_as_one_group(history: History) -> None:
    listing = find(history, ns=PATIENTS, limit=1000)
    items = listing["items"]
    assert not listing["truncated"]
    assert {i["namespace"] for i in items} == {PATIENTS}
    inserts = [i for i in items if i["operation"] == "insert"]
    assert [i["_id"] for i in inserts] == [*range(1, 451), {"$oid": str(OID)}, 1000]
    update = next(i for i in items if i["operation"] == "update")
    assert update["_id"] == 7 and update["position"] == pos(history.positions["update"])
    [single] = [i for i in items if i["kind"] == "operation" and i["operation"] == "delete"]
    assert single["_id"] == 5  # the insert after it keeps it out of the deleteMany's group
    [group] = groups(listing)
    first, last = history.positions["first_delete"], history.positions["last_delete"]
    assert (group["operation"], group["count"], group["namespace"]) == ("delete", 421, PATIENTS)
    assert (group["firstPosition"], group["lastPosition"]) == (pos(first), pos(last))
    assert group["beforeOp"] == pos(first)
    restore = f"sidecar restore --before-op {pos(first)} --ns-include {PATIENTS}"
    renamed = f"{PATIENTS}_before_{first.time}_{first.inc}"
    assert group["restoredAs"] == renamed
    assert group["restoreCommand"] == f"{restore} --ns-from {PATIENTS} --ns-to {renamed}"
    assert group["dropCommand"] == f"{restore} --drop"
    assert group["dropDiscards"].startswith(f"every write to {PATIENTS} at or after {pos(first)} ")
    assert group["summary"].startswith(f"421 deletes on {PATIENTS} between {group['firstWall']} and ")
    assert all(i["beforeOp"] == i["position"] for i in items if i["kind"] == "operation")
    positions = [i.get("position") or i["firstPosition"] for i in items]
    assert positions == sorted(positions, key=lambda p: tuple(map(int, p.split(":"))))


def test_commands_list_the_drop_and_group_the_dropped_database(history: History) -> None:
    listing = find(history, ns=DB + "*", op="command")
    items = listing["items"]
    drop = next(i for i in items if i["kind"] == "operation" and i["command"] == "drop")
    assert drop["namespace"] == f"{DB}.visits" and drop["position"] == pos(history.positions["drop_visits"])
    [group] = groups(listing)
    assert group["operation"] == "drop" and group["namespace"] == f"{DB}scratch.*"
    assert group["count"] >= 3 and group["commands"]["dropDatabase"] == 1
    assert sorted(group["collections"]) == [f"{DB}scratch.a", f"{DB}scratch.b"]
    assert (
        f"--ns-include '{DB}scratch.*' --ns-from '{DB}scratch.*' --ns-to '{DB}scratch.*_before_"
        in (group["restoreCommand"])
    )
    # a database name alone is db.*: the drop of visits, nothing of the other database
    alone = find(history, ns=DB, op="command")["items"]
    assert drop in alone and all(i["namespace"].startswith(f"{DB}.") for i in alone)


def test_a_time_range_by_position_holds_exactly_the_group(history: History) -> None:
    first, last = history.positions["first_delete"], history.positions["last_delete"]
    listing = find(history, ns=PATIENTS, since=pos(first), until=pos(last))
    [group] = listing["items"]
    assert group["count"] == 421 and group["beforeOp"] == pos(first)
    assert listing["slices"]["skipped"] > 0  # before since, after until: not opened


def test_a_time_range_by_wall_time_with_a_zone(history: History) -> None:
    update = find(history, ns=PATIENTS, op="update")["items"][0]
    wall = dt.datetime.fromisoformat(update["wall"].replace("Z", "+00:00"))
    seoul = wall.astimezone(SEOUL).isoformat(timespec="milliseconds")
    listing = find(history, ns=PATIENTS, since=seoul, until=update["wall"])
    assert update in listing["items"]
    assert all(i.get("wall") in (None, update["wall"]) for i in listing["items"] if i["kind"] == "operation")


def test_an_id_finds_the_operations_on_that_document(history: History) -> None:
    items = find(history, ns=PATIENTS, doc_id="7")["items"]
    assert [(i["operation"], i["_id"]) for i in items] == [("insert", 7), ("update", 7)]
    assert [i["_id"] for i in find(history, doc_id=str(OID))["items"]] == [{"$oid": str(OID)}]
    assert find(history, doc_id='"7"')["items"] == []  # the string 7 is another _id
    deleted = find(history, ns=PATIENTS, op="delete", doc_id="20")["items"]
    assert [i["kind"] for i in deleted] == ["operation"]  # by id: single operations, no group
    assert deleted[0]["position"] == pos(history.positions["first_delete"])


def test_slices_that_cannot_match_are_not_opened(history: History) -> None:
    """The catalog's namespaces decide which slices are streamed: only those holding db.other (or a
    command) are opened for a search of db.other."""
    slices = SliceCatalog(oplog_dir(history.settings)).slices()
    holding = [s for s in slices if any(k == f"{DB}.other" or k.endswith(".$cmd") for k in s["namespaces"])]
    listing = find(history, ns=f"{DB}.other")
    assert [i["_id"] for i in listing["items"]] == list(range(30))
    assert listing["slices"] == {
        "total": len(slices),
        "opened": len(holding),
        "skipped": len(slices) - len(holding),
        "unread": 0,
        "unreadable": [],
    }
    assert len(slices) - len(holding) >= 3
    assert listing["entriesRead"] == sum(s["entries"] for s in holding)


def test_the_limit_truncates_says_where_to_go_on_and_stops_reading(history: History) -> None:
    listing = find(history, ns=PATIENTS, op="insert", limit=5)
    assert [i["_id"] for i in listing["items"]] == [1, 2, 3, 4, 5]
    assert listing["truncated"] and listing["slices"]["unread"] > 0
    following = find(history, ns=PATIENTS, op="insert", since=listing["next"], limit=1)
    assert following["items"][0]["_id"] == 6


def test_cli_text_names_the_group_in_utc_and_seoul_time_and_the_undo(history: History) -> None:
    result = _cli(history, "--ns", PATIENTS, "--op", "delete")
    assert result.returncode == 0, result.stderr
    first = pos(history.positions["first_delete"])
    lines = result.stdout.splitlines()
    group_line = next(line for line in lines if line.startswith("421 deletes on"))
    assert "Asia/Seoul)" in group_line and f"{first} .. " in group_line
    undo, in_place = (line.strip() for line in lines[lines.index(group_line) + 1 :][:2])
    assert undo.startswith(f"undo as {PATIENTS}_before_") and undo.endswith(
        f": sidecar restore --before-op {first} --ns-include {PATIENTS} --ns-from {PATIENTS} "
        f"--ns-to {PATIENTS}_before_{first.replace(':', '_')}"
    )
    assert in_place.startswith(f"or in place, discarding every write to {PATIENTS} at or after {first} ")
    assert in_place.endswith(f": sidecar restore --before-op {first} --ns-include {PATIENTS} --drop")


def test_cli_refuses_a_bad_time_in_one_line(history: History) -> None:
    for value, said in (("yesterday", "neither an oplog position"), ("2024-12-01T10", "names only an hour")):
        result = _cli(history, "--since", value)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("sidecar: error: --since: ") and said in result.stderr
    result = _cli(history, "--since", "2024-12-01 10:00", "--tz", "Mars/Olympus")
    assert result.returncode == 2 and "argument --tz: unknown time zone 'Mars/Olympus'" in result.stderr


def _cli(history: History, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(history.settings, "oplog", "find", *args, timeout=60)


async def test_the_api_answers_what_the_cli_prints_as_json(history: History, aiohttp_client: Any) -> None:
    first = pos(history.positions["first_delete"])
    client = await aiohttp_client(create_app(Sidecar(history.api)))
    resp = await client.get(
        "/api/backup/oplog",
        params={"ns": PATIENTS, "op": "delete", "since": first, "limit": "10"},
        headers={"Authorization": f"Bearer {READ}"},
    )
    assert resp.status == 200
    cli = _cli(history, "--ns", PATIENTS, "--op", "delete", "--since", first, "--limit", "10", "--json")
    assert cli.returncode == 0, cli.stderr
    assert await resp.json() == json.loads(cli.stdout)
    # a zone offset typed into a URL unencoded: its '+' arrives as a space, and is read as '+'
    wall = (await resp.json())["items"][0]["firstWall"]
    seoul = dt.datetime.fromisoformat(wall.replace("Z", "+00:00")).astimezone(
        dt.timezone(dt.timedelta(hours=9))
    )
    raw = f"/api/backup/oplog?ns={PATIENTS}&op=delete&since={seoul.isoformat(timespec='milliseconds')}"
    typed = await client.get(raw, headers={"Authorization": f"Bearer {READ}"})
    assert typed.status == 200 and (await typed.json())["items"][0]["firstWall"] == wall


async def test_one_parser_serves_the_cli_and_the_api(history: History, aiohttp_client: Any) -> None:
    """The second of the update, spelled as sidecar/time_input.py accepts it, gives one listing from the
    CLI and the API (a local time: the CLI reads it in --tz, the API wants the zone written)."""
    update = find(history, ns=PATIENTS, op="update")["items"][0]
    second = dt.datetime.fromisoformat(update["wall"].replace("Z", "+00:00")).replace(microsecond=0)
    seoul = second.astimezone(SEOUL)
    spellings = [
        f"{second:%Y-%m-%dT%H:%M:%S}Z",
        f"{second:%Y-%m-%dt%H:%M:%S}z",
        f"{seoul:%Y-%m-%dT%H:%M:%S}+09:00",
        f"{seoul:%Y-%m-%d %H:%M:%S}+0900",
        f"{seoul:%Y-%m-%dT%H:%M:%S}+09",
        f"{second:%Y%m%dT%H%M%S}Z",
        f"@{int(second.timestamp())}",
    ]
    client = await aiohttp_client(create_app(Sidecar(history.api)))
    listings = []
    for since in spellings:
        resp = await client.get(
            "/api/backup/oplog",
            params={"ns": PATIENTS, "op": "update", "since": since, "limit": "3"},
            headers={"Authorization": f"Bearer {READ}"},
        )
        assert resp.status == 200, await resp.text()
        listings.append(await resp.json())
    local_time = f"{seoul:%Y-%m-%d %H:%M:%S}"
    cli = _cli(history, "--ns", PATIENTS, "--op", "update", "--since", local_time, "--tz", "Asia/Seoul")
    as_json = _cli(
        history, "--ns", PATIENTS, "--op", "update", "--since", local_time, "--limit", "3", "--json"
    )
    assert cli.returncode == 0 and as_json.returncode == 0, cli.stderr + as_json.stderr
    assert all(listing == listings[0] for listing in listings) and json.loads(as_json.stdout) == listings[0]
    assert listings[0]["query"]["since"] == f"{second:%Y-%m-%dT%H:%M:%S}.000Z"
    assert update in listings[0]["items"] and pos(history.positions["update"]) in cli.stdout
    zoneless = await client.get(
        "/api/backup/oplog",
        params={"since": f"{seoul:%Y-%m-%dT%H:%M:%S}"},
        headers={"Authorization": f"Bearer {READ}"},
    )
    assert zoneless.status == 400 and "has no time zone" in await zoneless.text()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("since=yesterday", "since"),
        ("until=2024-12-01T10:00:00", "until"),
        ("since=99999999999:1", "since"),
        ("op=remove", "op"),
        ("ns=a.", "ns"),
        ("ns=", "ns"),
        ("id=", "id"),
        ("limit=0", "limit"),
        ("limit=ten", "limit"),
        ("since=1733011300:0&until=1733011200:0", "until"),
        ("verbose=true", "verbose"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    history: History, aiohttp_client: Any, query: str, named: str
) -> None:
    client = await aiohttp_client(create_app(Sidecar(history.api)))
    resp = await client.get(f"/api/backup/oplog?{query}", headers={"Authorization": f"Bearer {READ}"})
    assert resp.status == 400
    message = (await resp.json())["error"]["message"]
    assert named in message and "query parameter" in message


def stored_slice(settings: Settings, *docs: dict[str, Any]) -> str:
    """A slice of ``docs`` (oplog entries), through the archiver's own writer and catalog: its name."""
    buffer = SliceBuffer(None)
    for doc in docs:
        buffer.add(RawBSONDocument(bson.encode(doc)), doc["ts"])
    entry = write_slice(settings, buffer)
    SliceCatalog(oplog_dir(settings)).add_slice(entry)
    return entry["fileName"]


def test_operations_nested_in_apply_ops_are_hits_at_the_entry_position(tmp_path: Path) -> None:
    """mongod's shapes, written through the archiver's own slice writer: a transaction's applyOps
    entry (two collections) and a batched-delete applyOps entry (grouped)."""
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path, connect_timeout_seconds=0.5)  # no server here
    wall = dt.datetime(2024, 12, 1, 5, 31, 7, 120000)
    txn = {
        "op": "c",
        "ns": "admin.$cmd",
        "o": {
            "applyOps": [
                {"op": "i", "ns": "maekcord.patients", "o": {"_id": 1, "n": 1}},
                {
                    "op": "u",
                    "ns": "maekcord.visits",
                    "o": {"$v": 2, "diff": {"u": {"n": 2}}},
                    "o2": {"_id": 9},
                },
            ]
        },
        "lsid": {"id": ObjectId()},
        "txnNumber": 3,
        "ts": Timestamp(1733031067, 1),
        "wall": wall,
    }
    batched = {
        "op": "c",
        "ns": "admin.$cmd",
        "o": {"applyOps": [{"op": "d", "ns": "maekcord.patients", "o": {"_id": n}} for n in range(3)]},
        "ts": Timestamp(1733031068, 1),
        "wall": wall + dt.timedelta(seconds=1),
    }
    oplog_dir(settings).mkdir(parents=True)
    catalog = SliceCatalog(oplog_dir(settings))
    for doc in (txn, batched):  # one slice each
        stored_slice(settings, doc)
    items = find_operations(settings, FindQuery.parse(["maekcord.*"]))["items"]
    insert, update, group = items
    assert (insert["operation"], insert["namespace"], insert["_id"]) == ("insert", "maekcord.patients", 1)
    assert (update["operation"], update["namespace"], update["_id"]) == ("update", "maekcord.visits", 9)
    assert insert["position"] == update["position"] == "1733031067:1" and insert["transaction"]
    assert insert["wall"] == "2024-12-01T05:31:07.120Z"
    assert (group["count"], group["firstPosition"], group["beforeOp"]) == (3, "1733031068:1", "1733031068:1")
    assert group["first"] == group["last"] == {"t": 1733031068, "i": 1}  # one entry holds the group
    # a damaged slice is named, and the others are still searched
    damaged = oplog_dir(settings) / catalog.slices()[1]["fileName"]
    damaged.write_bytes(damaged.read_bytes()[:20])
    listing = find_operations(settings, FindQuery.parse(["maekcord.*"]))
    assert listing["items"] == [insert, update]
    [problem] = listing["slices"]["unreadable"]
    assert problem["fileName"] == damaged.name and "truncated" in problem["error"]


def test_the_writes_a_drop_restore_discards_name_the_slices_it_could_not_count(tmp_path: Path) -> None:
    """``later_writes`` over slices from the archiver's writer: the writes after the point on the
    replaced namespaces are counted; two damaged slices after the point make the count a lower bound,
    and the message names both."""
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path)
    oplog_dir(settings).mkdir(parents=True)

    def insert(ts: Timestamp, ns: str = "maekcord.patients") -> dict:
        return {"op": "i", "ns": ns, "o": {"_id": ts.time}, "ts": ts}

    stored_slice(settings, insert(Timestamp(100, 1)))  # before the point: kept by the restore
    update = {"op": "u", "ns": "maekcord.visits", "o": {"$v": 2, "diff": {"u": {"n": 2}}}, "o2": {"_id": 9}}
    stored_slice(
        settings,
        insert(Timestamp(200, 1)),
        insert(Timestamp(200, 2), "other.notes"),
        {**update, "ts": Timestamp(201, 1)},
    )
    damaged = [stored_slice(settings, insert(Timestamp(300 + k, 1))) for k in range(2)]
    for name in damaged:
        path = oplog_dir(settings) / name
        path.write_bytes(path.read_bytes()[:20])
    found = later_writes(
        settings, Cut(until=Timestamp(150, 0)), "150:0", ["maekcord.patients", "maekcord.visits"]
    )
    assert found.message(None, dry_run=True) == (
        "at least 2 writes on maekcord.patients (1), maekcord.visits (1) after 150:0 would be discarded "
        "(--drop replaces those namespaces); they stay in the oplog archive "
        f"(unreadable, not counted: {damaged[0]}, {damaged[1]})"
    )
    report = found.as_json()
    assert report["after"] == {"t": 150, "i": 0, "time": "1970-01-01T00:02:30Z", "given": "150:0"}
    assert (report["total"], report["namespaces"], report["unreadableSlices"]) == (
        2,
        {"maekcord.patients": 1, "maekcord.visits": 1},
        damaged,
    )


def test_an_archive_that_reaches_until_leaves_the_server_unread(tmp_path: Path) -> None:
    """``until`` at the newest stored entry (a position) or before its wall time (a time): nothing the
    server adds after the archive can match, so it is not asked (here no server answers at all)."""
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path, connect_timeout_seconds=0.5)
    oplog_dir(settings).mkdir(parents=True)
    wall = dt.datetime(2024, 12, 1, 5, 31, 7)
    stored_slice(
        settings,
        *(
            {"op": "i", "ns": "maekcord.patients", "o": {"_id": n}, "ts": Timestamp(1733031067 + n, 1)}
            | {"wall": wall + dt.timedelta(seconds=n)}
            for n in range(3)
        ),
    )
    for until in ("1733031069:1", "2024-12-01T05:31:08.500Z"):
        listing = find_operations(settings, FindQuery.parse(["maekcord.*"], until=until))
        assert listing["serverOplog"]["skipped"] == "the archive reaches past until", until
        assert listing["serverOplog"]["searched"] is False and listing["serverOplog"]["error"] is None
    # at the newest entry's wall time: the server may hold more writes of that millisecond
    listing = find_operations(settings, FindQuery.parse(["maekcord.*"], until="2024-12-01T05:31:09Z"))
    assert listing["serverOplog"]["skipped"] is None
    assert listing["serverOplog"]["error"].startswith("the server's oplog could not be read: ")


def test_slices_that_start_after_until_by_wall_time_are_not_opened(tmp_path: Path) -> None:
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path, connect_timeout_seconds=0.5)
    oplog_dir(settings).mkdir(parents=True)
    wall = dt.datetime(2024, 12, 1, 5, 31, 7)
    for start in (0, 10):  # two slices of three inserts, ten seconds apart
        stored_slice(
            settings,
            *(
                {"op": "i", "ns": "maekcord.patients", "o": {"_id": n}, "ts": Timestamp(1733031067 + n, 1)}
                | {"wall": wall + dt.timedelta(seconds=n)}
                for n in range(start, start + 3)
            ),
        )
    query = FindQuery.parse(["maekcord"], op="insert", until="2024-12-01T05:31:12Z", limit=5)
    listing = find_operations(settings, query)
    assert listing["query"] == {
        "ns": ["maekcord.*"],
        "op": "insert",
        "since": None,
        "until": "2024-12-01T05:31:12.000Z",
        "id": None,
        "limit": 5,
    }
    assert listing["slices"] == {"total": 2, "opened": 1, "skipped": 1, "unread": 0, "unreadable": []}
    assert [item["_id"] for item in listing["items"]] == [0, 1, 2]
    assert listing["serverOplog"]["skipped"] == "the archive reaches past until"


def test_an_unknown_operation_is_refused_naming_the_choices_and_its_first_40_characters() -> None:
    with pytest.raises(FindError) as refused:
        FindQuery.parse(op="x" * 50)
    assert refused.value.parameter == "op"
    assert str(refused.value) == f"op: must be one of insert, update, delete, command, got {'x' * 40!r}"


def test_a_rename_is_found_under_its_new_name_and_batched_writes_are_no_transaction(tmp_path: Path) -> None:
    """mongod's shapes: a renameCollection names its target only in ``to``; batched writes
    (``multiOpType: 1``) carry a session and txnNumber but are not a multi-document transaction."""
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path, connect_timeout_seconds=0.5)  # no server here
    oplog_dir(settings).mkdir(parents=True)
    rename = {"renameCollection": "maekcord.intake", "to": "maekcord.patients", "dropTarget": False}
    batched = {"applyOps": [{"op": "i", "ns": "maekcord.patients", "o": {"_id": n}} for n in range(2)]}
    session = {"lsid": {"id": ObjectId()}, "txnNumber": 4, "multiOpType": 1}
    stored_slice(
        settings,
        {"op": "c", "ns": "maekcord.$cmd", "o": rename, "ts": Timestamp(1733031067, 1)},
        {"op": "c", "ns": "admin.$cmd", "o": batched, "ts": Timestamp(1733031068, 1)} | session,
    )
    items = find_operations(settings, FindQuery.parse(["maekcord.patients"]))["items"]
    assert [(i["operation"], i["namespace"], i["detail"], i["transaction"]) for i in items] == [
        ("command", "maekcord.intake", "to maekcord.patients", False),
        ("insert", "maekcord.patients", None, False),
        ("insert", "maekcord.patients", None, False),
    ]


def test_the_undo_of_an_operation_and_of_a_database_wide_one() -> None:
    before = Timestamp(1733031067, 3)
    assert undo(before, "maekcord.patients") == {
        "restoredAs": "maekcord.patients_before_1733031067_3",
        "restoreCommand": "sidecar restore --before-op 1733031067:3 --ns-include maekcord.patients "
        "--ns-from maekcord.patients --ns-to maekcord.patients_before_1733031067_3",
        "dropCommand": "sidecar restore --before-op 1733031067:3 --ns-include maekcord.patients --drop",
        "dropDiscards": "every write to maekcord.patients at or after 1733031067:3 (a safety backup of "
        "what it replaces is taken first; --dry-run counts them)",
    }
    whole = undo(before, "maekcord.$cmd")  # a dropDatabase: every collection of the database
    assert whole["restoredAs"] == "maekcord.*_before_1733031067_3"
    assert whole["dropCommand"] == "sidecar restore --before-op 1733031067:3 --ns-include 'maekcord.*' --drop"
