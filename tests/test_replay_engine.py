"""The oplog replay engine against the embedded server's own oplog: every operation and command shape
it writes, replayed into another (renamed) database, compared byte for byte; the cut; transactions;
refusals before any write; idempotence; the restore's namespace rules."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import bson
import pymongo
import pytest
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.timestamp import Timestamp

from sidecar.engine.replay.archive_oplog import ArchiveOplog
from sidecar.engine.replay.bson_raw import string
from sidecar.engine.replay.commands import Command, CommandTranslator
from sidecar.engine.replay.engine import ReplayError, ReplayOptions, plan_replay, replay, through_second
from sidecar.engine.replay.field_order import update_order
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import OplogOp
from sidecar.engine.restore_errors import RestoreCancelled, server_message
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.progress import Progress
from tests.replay_support import decoded, entries_since, entry, newest_ts, renamed, snapshot
from tests.test_restore_support import scratch_db_fixture  # noqa: F401 - fixture

Step = Callable[[pymongo.database.Database], object]


def _history(client: pymongo.MongoClient, other: str) -> list[tuple[str, Step]]:
    """Writes of every shape the embedded server logs, each a labelled step."""

    def transaction(db: pymongo.database.Database) -> None:
        with client.start_session() as session, session.start_transaction():
            db.people.insert_one({"_id": 10, "name": "tx", "tags": []}, session=session)
            db.visits.insert_one({"_id": 1, "who": 10}, session=session)
            db.people.update_one({"_id": 1}, {"$set": {"in_tx": True}}, session=session)
            db.visits.delete_one({"_id": 1}, session=session)

    def other_db(db: pymongo.database.Database) -> None:
        client[other].scratch.insert_one({"_id": 1})
        client.drop_database(other)

    return [
        (
            "create with validator",
            lambda db: db.create_collection("people", validator={"name": {"$type": "string"}}),
        ),
        ("create capped", lambda db: db.create_collection("log", capped=True, size=65536, max=100)),
        (
            "create with collation",
            lambda db: db.create_collection("ci", collation={"locale": "en", "strength": 2}),
        ),
        (
            "insert",
            lambda db: db.people.insert_many(
                [
                    {
                        "_id": 1,
                        "name": "a",
                        "n": {"p": 1, "q": [{"r": 1}, {"r": 2}]},
                        "tags": list(range(12)),
                        "k": 1,
                    },
                    {"_id": 2, "name": "b", "tags": ["x"], "k": 2},
                    {"_id": 3, "name": "c", "k": 3},
                ]
            ),
        ),
        (
            "$set nested and array element",
            lambda db: db.people.update_one(
                {"_id": 1}, {"$set": {"n.p": 2, "tags.1": "one", "new": {"deep": [1]}}}
            ),
        ),
        ("$unset", lambda db: db.people.update_one({"_id": 1}, {"$unset": {"n.q": 1, "k": 1}})),
        ("$push", lambda db: db.people.update_one({"_id": 1}, {"$push": {"tags": {"$each": [20, 21]}}})),
        ("$pop", lambda db: db.people.update_one({"_id": 1}, {"$pop": {"tags": 1}})),
        ("$pull", lambda db: db.people.update_one({"_id": 1}, {"$pull": {"tags": 3}})),
        ("$inc", lambda db: db.people.update_one({"_id": 2}, {"$inc": {"visits": 1}})),
        ("$currentDate", lambda db: db.people.update_one({"_id": 2}, {"$currentDate": {"seen": True}})),
        ("$rename", lambda db: db.people.update_one({"_id": 2}, {"$rename": {"k": "kk"}})),
        (
            "$rename into a new parent",
            lambda db: db.people.update_one(
                {"_id": 3}, {"$rename": {"k": "moved.k"}, "$set": {"moved.v": 1}}
            ),
        ),
        (
            "several new fields through several operators",
            lambda db: db.people.update_one(
                {"_id": 2},
                {
                    "$inc": {"9": 1, "10": 1},
                    "$set": {"flag": "young", "g.a": 2, "g.b": 1},
                    "$push": {"pushed": 1},
                },
            ),
        ),
        (
            "$unset, $set and $rename together",
            lambda db: db.people.update_one(
                {"_id": 2}, {"$set": {"added": 1}, "$rename": {"visits": "seen_times"}, "$unset": {"flag": 1}}
            ),
        ),
        ("$addToSet", lambda db: db.people.update_one({"_id": 2}, {"$addToSet": {"tags": "y"}})),
        ("array set past its end", lambda db: db.people.update_one({"_id": 2}, {"$set": {"tags.4": "far"}})),
        (
            "pipeline truncation",
            lambda db: db.people.update_one({"_id": 1}, [{"$set": {"tags": {"$slice": ["$tags", 3]}}}]),
        ),
        ("replace", lambda db: db.people.replace_one({"_id": 3}, {"name": "c2", "z": [1, {"y": 2}]})),
        ("upsert", lambda db: db.people.update_one({"_id": 4}, {"$set": {"name": "d"}}, upsert=True)),
        ("update many", lambda db: db.people.update_many({}, {"$set": {"all": 1}})),
        ("delete", lambda db: db.people.delete_one({"_id": 4})),
        ("capped inserts", lambda db: db.log.insert_many([{"_id": i, "line": f"l{i}"} for i in range(5)])),
        ("collation inserts", lambda db: db.ci.insert_many([{"_id": "A", "v": 1}, {"_id": "b", "v": 2}])),
        (
            "create indexes",
            lambda db: db.people.create_indexes(
                [
                    pymongo.IndexModel([("name", 1)], name="name_1", unique=True),
                    pymongo.IndexModel([("all", -1), ("k", 1)], name="all_k", sparse=True),
                    pymongo.IndexModel([("seen", 1)], name="ttl", expireAfterSeconds=3600),
                ]
            ),
        ),
        ("drop index", lambda db: db.people.drop_index("all_k")),
        ("collMod", lambda db: db.command("collMod", "people", validator={"name": {"$exists": True}})),
        (
            "create view",
            lambda db: db.command("create", "named", viewOn="people", pipeline=[{"$match": {"all": 1}}]),
        ),
        ("transaction", transaction),
        (
            "renameCollection",
            lambda db: (
                db.create_collection("tmp"),
                db.tmp.insert_one({"_id": 1}),
                db.client.admin.command("renameCollection", f"{db.name}.tmp", to=f"{db.name}.kept"),
            ),
        ),
        (
            "drop",
            lambda db: (
                db.create_collection("gone"),
                db.gone.insert_one({"_id": 1}),
                db.drop_collection("gone"),
            ),
        ),
        ("delete many", lambda db: db.ci.delete_many({})),
        ("other database dropped", other_db),
    ]


@pytest.fixture(name="mongo_client", scope="module")
def own_oplog_client(module_mongo_client: pymongo.MongoClient) -> pymongo.MongoClient:
    """The history reads the oplog after every step: from a server whose oplog holds only this module's."""
    return module_mongo_client


@pytest.fixture(name="history", scope="module")
def history_fixture(mongo_client: pymongo.MongoClient) -> Iterator[tuple[str, list[bytes], list]]:
    """The history run once on a fresh database: (db, entries, [(label, ts after, snapshot after)]).
    Tests replay it into databases of their own and leave the source as the history left it."""
    source, other = (f"rt_{uuid.uuid4().hex[:10]}" for _ in range(2))
    start = newest_ts(mongo_client)
    steps = []
    for label, step in _history(mongo_client, other):
        step(mongo_client[source])
        steps.append((label, newest_ts(mongo_client), snapshot(mongo_client, source)))
    yield source, entries_since(mongo_client, start), steps
    for name in (source, other):
        mongo_client.drop_database(name)


def test_the_history_has_every_shape_the_embedded_server_writes(history):
    _, entries, _ = history
    shapes = set()
    for e in decoded(entries):
        if e["op"] == "c":
            shapes.add(next(iter(e["o"])))
        elif e["op"] == "u" and "$v" in e["o"]:
            shapes.update(k for k, v in e["o"]["diff"].items() if v)
        elif e["op"] == "u":
            shapes.add("replacement")
        else:
            shapes.add(e["op"] + (" in transaction" if "lsid" in e else ""))
    assert shapes >= {
        "create", "createIndexes", "dropIndexes", "collMod", "renameCollection", "drop", "dropDatabase",
        "updatedFields", "removedFields", "truncatedArrays", "replacement",
        "i", "d", "i in transaction", "d in transaction",
    }  # fmt: skip


def test_a_replay_into_a_renamed_database_equals_the_source(history, mongo_client, scratch_db):
    source, entries, steps = history
    target = scratch_db()
    plan = plan_replay(entries, renamed(source, target))
    assert not plan.refused and plan.entries == len(entries)
    assert plan.namespaces[f"{target}.people"]["update"] >= 10
    progress = Progress()
    result = replay(mongo_client, entries, renamed(source, target), progress=progress)
    assert result.method == "native"  # the embedded server has no applyOps
    assert progress.documents == result.operations and progress.bytes == result.bytes == plan.bytes
    assert (progress.done, progress.position) == (len(entries), result.last_ts)  # every entry written
    assert result.as_json()["namespaces"] == plan.as_json()["namespaces"]
    assert snapshot(mongo_client, target) == steps[-1][2]


def test_every_cut_reproduces_the_state_at_that_point(history, mongo_client, scratch_db):
    source, entries, steps = history
    for index, (label, ts, expected) in enumerate(steps):
        target = scratch_db()
        result = replay(mongo_client, entries, renamed(source, target, until=ts))
        assert snapshot(mongo_client, target) == expected, label
        assert result.last_ts is not None and result.last_ts <= ts
        if index + 1 < len(steps):
            assert result.stopped_at is not None and result.stopped_at > ts
        mongo_client.drop_database(target)


def test_before_an_entry_stops_just_before_it(history, mongo_client, scratch_db):
    source, entries, steps = history
    labels = [label for label, _, _ in steps]
    at = labels.index("delete many")
    first_delete = next(
        e["ts"]
        for e in decoded(entries)
        if e["op"] == "d" and e["ns"] == f"{source}.ci" and e["ts"] > steps[at - 1][1]
    )
    target = scratch_db()
    result = replay(mongo_client, entries, renamed(source, target, before=first_delete))
    assert result.stopped_at == first_delete
    assert snapshot(mongo_client, target) == steps[at - 1][2]


def test_a_transaction_applies_whole_or_not_at_all_at_the_cut(history, mongo_client, scratch_db):
    source, entries, steps = history
    group = [e for e in decoded(entries) if "lsid" in e and e["ns"].startswith(source)]
    assert len(group) == 4 and len({e["ts"] for e in group}) == 1
    ts = group[0]["ts"]
    labels = [label for label, _, _ in steps]
    before_tx, after_tx = steps[labels.index("transaction") - 1][2], steps[labels.index("transaction")][2]
    for options, expected in [
        ({"before": ts}, before_tx),
        ({"until": Timestamp(ts.time, ts.inc - 1)}, before_tx),
        ({"until": ts}, after_tx),
    ]:
        target = scratch_db()
        result = replay(mongo_client, entries, renamed(source, target, **options))
        assert snapshot(mongo_client, target) == expected, options
        assert result.transactions == (1 if "until" in options and options["until"] == ts else 0)
        mongo_client.drop_database(target)


def test_replaying_twice_gives_the_same_result(history, mongo_client, scratch_db):
    source, entries, steps = history
    target = scratch_db()
    replay(mongo_client, entries, renamed(source, target))
    progress = Progress()
    result = replay(mongo_client, entries, renamed(source, target, writers=0), progress=progress)  # in order
    assert snapshot(mongo_client, target) == steps[-1][2]
    assert (progress.done, progress.position) == (len(entries), result.last_ts)


def test_a_replay_over_a_later_state_converges(history, mongo_client, scratch_db):
    """A fuzzy base: the documents as they are at the end, then the whole range again."""
    source, entries, steps = history
    target = scratch_db()
    middle = len(entries) // 2
    replay(mongo_client, entries, renamed(source, target))
    replay(mongo_client, entries[middle:], renamed(source, target))
    assert snapshot(mongo_client, target) == steps[-1][2]


def test_include_and_exclude_choose_namespaces_like_the_restore(history, mongo_client, scratch_db):
    source, entries, _ = history
    target = scratch_db()
    options = RestoreOptions(
        ns_include=(f"{source}.*",),
        ns_exclude=(f"{source}.log",),
        ns_from=(f"{source}.*",),
        ns_to=(f"{target}.*",),
    )
    result = replay(mongo_client, entries, ReplayOptions(scope=ReplayScope.of(options)))
    names = set(mongo_client[target].list_collection_names())
    assert "log" not in names and {"people", "kept", "named"} <= names
    assert f"{target}.log" not in result.namespaces and result.skipped > 0
    assert not any(ns.startswith(source) for ns in result.namespaces)


def test_an_unknown_entry_is_refused_with_its_ts_and_namespace_before_any_write(mongo_client, scratch_db):
    db = scratch_db()
    t = 1_800_000_000
    entries = [
        entry(Timestamp(t, 1), "i", f"{db}.c", {"_id": 1}),
        entry(Timestamp(t, 2), "c", f"{db}.$cmd", {"frobnicate": "c"}),
        entry(Timestamp(t, 3), "x", f"{db}.c", {"_id": 2}),
        entry(Timestamp(t, 4), "u", f"{db}.c", {"$v": 2, "diff": {"b": {"f": b"x"}}}, o2={"_id": 1}),
    ]
    plan = plan_replay(entries)
    assert [(e.ts, e.ns) for e in plan.refused] == [
        (Timestamp(t, 2), f"{db}.$cmd"),
        (Timestamp(t, 3), f"{db}.c"),
        (Timestamp(t, 4), f"{db}.c"),
    ]
    assert "frobnicate" in plan.refused[0].reason and "'x'" in plan.refused[1].reason
    with pytest.raises(
        ReplayError,
        match=rf"oplog entry {t}:2 on {db}\.\$cmd: unknown oplog command 'frobnicate' \(and 2 more\)",
    ):
        plan.raise_if_refused()
    assert db not in mongo_client.list_database_names()
    # replay itself stops at the entry, before writing anything of it
    with pytest.raises(ReplayError) as info:
        replay(mongo_client, entries)
    assert info.value.ts == Timestamp(t, 2) and info.value.ns == f"{db}.$cmd"
    assert [d["_id"] for d in mongo_client[db].c.find()] == [1]


def test_a_plan_reports_its_counts_and_its_refusal_as_a_point_restores_dry_run_shows_them():
    t = 1_800_000_050
    entries = [
        entry(Timestamp(t, 1), "i", "p.c", {"_id": 1}),
        entry(Timestamp(t, 2), "c", "p.$cmd", {"frobnicate": "c"}),
        entry(Timestamp(t, 3), "d", "p.c", {"_id": 1}),
    ]
    plan = plan_replay(entries)
    assert plan.as_json() == {
        "entries": 3,
        "bytes": sum(len(e) for e in entries),
        "operations": 2,
        "skipped": 0,
        "transactions": 0,
        "pendingTransactions": 0,
        "firstTs": f"{t}:1",
        "lastTs": f"{t}:3",
        "stoppedAt": None,
        "namespaces": {"p.c": {"delete": 1, "insert": 1}},
        "refused": [{"ts": f"{t}:2", "ns": "p.$cmd", "reason": "unknown oplog command 'frobnicate'"}],
        "refusedCount": 1,
    }
    with pytest.raises(ReplayError) as info:
        plan.raise_if_refused()
    assert str(info.value) == f"oplog entry {t}:2 on p.$cmd: unknown oplog command 'frobnicate'"


_T = Timestamp(1_800_000_700, 1)
# (the entries, the refusal an operator reads: where, on what and why), replayed as p.* -> q.*
REFUSED_ENTRIES = [
    (
        [entry(_T, "c", "admin.$cmd", {"applyOps": 5})],
        "an applyOps entry whose applyOps is not a list of operations",
    ),
    (
        [entry(_T, "c", "admin.$cmd", {"applyOps": [5]})],
        "an applyOps entry whose applyOps is not a list of operations",
    ),
    ([entry(_T, "c", "p.$cmd", {"create": 5})], "command 'create' does not name a collection"),
    (
        [entry(_T, "c", "p.$cmd", {"create": "m", "timeseries": {"timeField": "t"}})],
        "creates a time-series collection, which this engine does not restore",
    ),
    (
        [entry(_T, "c", "admin.$cmd", {"renameCollection": "other.a", "to": "p.a"})],
        "renames other.a, which is not replayed, into p.a, which is: its documents are not in the restore",
    ),
    ([entry(_T, "x", "p.c", {"_id": 1})], "unknown oplog op 'x'"),
    ([entry(_T, "d", "p.c", {"k": 1})], "the entry does not name the document's _id"),
    ([bson.encode(SON([("op", "i"), ("ns", "p.c"), ("ts", _T)]))], "the entry has no 'o' document"),
    (
        [entry(Timestamp(_T.time, 2), "i", "p.c", {"_id": 1}), entry(_T, "i", "p.c", {"_id": 2})],
        f"out of order (after {_T.time}:2)",
    ),
    ([bson.encode(SON([("op", "i"), ("ns", "p.c"), ("o", {"_id": 1})]))], "entry 1 has no timestamp"),
]


@pytest.mark.parametrize(("entries", "reason"), REFUSED_ENTRIES, ids=[r for _, r in REFUSED_ENTRIES])
def test_an_entry_the_engine_cannot_replay_is_refused_where_it_is_with_the_reason(entries, reason):
    refused = plan_replay(entries, renamed("p", "q")).refused
    last = bson.decode(entries[-1])
    assert [(e.ts, e.ns, e.reason) for e in refused] == [(last.get("ts"), last["ns"], reason)]


def test_renames_into_and_out_of_the_replayed_namespaces(mongo_client, scratch_db):
    source, outside, target = scratch_db(), scratch_db(), scratch_db()
    t = 1_800_000_100
    into = [
        entry(Timestamp(t, 1), "c", "admin.$cmd", {"renameCollection": f"{outside}.a", "to": f"{source}.a"})
    ]
    plan = plan_replay(into, renamed(source, target))
    assert plan.refused and "not replayed" in plan.refused[0].reason
    out = [
        entry(Timestamp(t, 2), "i", f"{source}.b", {"_id": 1}),
        entry(Timestamp(t, 3), "c", "admin.$cmd", {"renameCollection": f"{source}.b", "to": f"{outside}.b"}),
    ]
    result = replay(mongo_client, out, renamed(source, target))
    assert result.namespaces[f"{target}.b"] == {"insert": 1, "drop": 1}
    assert "b" not in mongo_client[target].list_collection_names()
    assert outside not in mongo_client.list_database_names()


@pytest.mark.parametrize(
    "body",
    [{"renameCollection": "a.b"}, {"renameCollection": "a.b", "to": 5}, {"renameCollection": 5, "to": "a.c"}],
    ids=["no to", "to not a namespace", "from not a namespace"],
)
def test_a_rename_without_both_namespaces_is_refused(body):
    plan = plan_replay([entry(Timestamp(1_800_000_150, 1), "c", "admin.$cmd", body)])
    assert [e.reason for e in plan.refused] == ["renameCollection without its from and to namespaces"]


def test_convert_to_capped_runs_on_the_renamed_target():
    """The embedded server has no convertToCapped command: the command as the replay sends it."""
    raw = entry(Timestamp(1_800_000_160, 1), "c", "src.$cmd", {"convertToCapped": "c", "size": 65536})
    translator = CommandTranslator(renamed("src", "dst").scope)
    assert translator.commands(OplogOp(Timestamp(1_800_000_160, 1), RawBSONDocument(raw))) == [
        Command("convertToCapped", "dst.c", "dst", SON([("convertToCapped", "c"), ("size", 65536)]))
    ]


def test_drop_database_under_renaming_drops_what_came_from_it(mongo_client, scratch_db):
    source, target = scratch_db(), scratch_db()
    t = 1_800_000_200
    entries = [
        entry(Timestamp(t, 1), "i", f"{source}.a", {"_id": 1}),
        entry(Timestamp(t, 2), "c", f"{source}.$cmd", {"dropDatabase": 1}),
    ]
    mongo_client[target].keep.insert_one({"_id": 1})  # not from the source: stays
    replay(mongo_client, entries, renamed(source, target))
    assert mongo_client[target].list_collection_names() == ["keep"]
    plain = scratch_db()
    replay(mongo_client, [entry(Timestamp(t, 3), "i", f"{plain}.a", {"_id": 1})])
    replay(mongo_client, [entry(Timestamp(t, 4), "c", f"{plain}.$cmd", {"dropDatabase": 1})])
    assert plain not in mongo_client.list_database_names()


def test_drop_database_under_a_rename_only_scope_drops_only_the_renamed_targets(mongo_client, scratch_db):
    """--ns-from/--ns-to without an include or exclude: every namespace is replayed, the source's under
    the new name. Its dropDatabase drops what it renamed, not the live database under the source name
    (nor anything else in the target)."""
    source, target = scratch_db(), scratch_db()
    mongo_client[source].live.insert_one({"_id": 1})  # the deployment's database: no replay writes it
    mongo_client[target].keep.insert_one({"_id": 1})
    scope = ReplayScope.of(RestoreOptions(ns_from=(f"{source}.*",), ns_to=(f"{target}.*",)))
    assert not scope.include and not scope.exclude and not scope.is_plain
    t = 1_800_000_300
    entries = [
        entry(Timestamp(t, 1), "i", f"{source}.a", {"_id": 1}),
        entry(Timestamp(t, 2), "i", f"{source}.b", {"_id": 1}),
        entry(Timestamp(t, 3), "c", f"{source}.$cmd", {"dropDatabase": 1}),
    ]
    result = replay(mongo_client, entries, ReplayOptions(scope=scope))
    assert result.namespaces[f"{target}.a"] == {"insert": 1, "drop": 1}
    assert mongo_client[source].list_collection_names() == ["live"]
    assert mongo_client[target].list_collection_names() == ["keep"]


@pytest.mark.parametrize("writers", [0, 4], ids=["in order", "parallel"])
def test_a_write_the_server_refuses_stops_the_replay_at_its_entry_with_the_servers_message(
    mongo_client, scratch_db, writers
):
    db = scratch_db()
    t = 1_800_000_280
    entries = [
        entry(Timestamp(t, 1), "i", f"{db}.c", {"_id": 1, "s": "text"}),
        entry(Timestamp(t, 2), "i", f"{db}.c", {"_id": 2}),
        entry(Timestamp(t, 3), "u", f"{db}.c", {"$inc": {"s": 1}}, o2={"_id": 1}),
    ]
    with pytest.raises(ReplayError) as info:
        replay(mongo_client, entries, ReplayOptions(method="native", writers=writers))
    with pytest.raises(pymongo.errors.WriteError) as direct:
        mongo_client[db].c.update_one({"_id": 1}, {"$inc": {"s": 1}})
    refused = info.value
    assert (refused.ts, refused.ns) == (Timestamp(t, 3), f"{db}.c")
    assert refused.reason == f"write to {db}.c failed: {direct.value.details['errmsg']}"


def test_a_command_the_server_refuses_stops_the_replay_at_its_entry_with_the_servers_message(
    mongo_client, scratch_db
):
    db = scratch_db()
    t = 1_800_000_290
    entries = [
        entry(Timestamp(t, 1), "i", f"{db}.c", {"_id": 1}),
        entry(Timestamp(t, 2), "c", f"{db}.$cmd", {"collMod": "c", "frobnicate": 1}),
    ]
    with pytest.raises(ReplayError) as info:
        replay(mongo_client, entries, ReplayOptions(method="native"))
    with pytest.raises(pymongo.errors.OperationFailure) as direct:
        mongo_client[db].command("collMod", "c", frobnicate=1)
    refused = info.value
    assert (refused.ts, refused.ns) == (Timestamp(t, 2), f"{db}.$cmd")
    assert refused.reason == f"collMod failed: {server_message(direct.value)}"


def test_a_cancelled_replay_stops(history, mongo_client, scratch_db):
    source, entries, _ = history
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RestoreCancelled):
        replay(mongo_client, entries, renamed(source, scratch_db()), cancel=cancel)


def test_a_cancelled_parallel_replay_returns_once_its_writers_have_stopped(mongo_client, scratch_db):
    """Cancelled while its writers hold a window, the replay raises only once every writer thread has
    ended: nothing writes to the target after the caller heard that the replay stopped. (How much of
    that window is in depends on how far the writers got: the work they had not begun is dropped.)"""
    db, window = scratch_db(), 500
    t = 1_800_000_250
    cancel = threading.Event()

    def entries() -> Iterator[bytes]:
        for i in range(window + 1):  # the last one begins a second window, never sent
            yield entry(Timestamp(t, i + 1), "i", f"{db}.c", {"_id": i, "pad": "x" * 200})
        cancel.set()  # the reader reads at most one entry ahead of the unit it hands on
        yield entry(Timestamp(t, window + 2), "i", f"{db}.c", {"_id": window + 1})

    before = set(threading.enumerate())
    with pytest.raises(RestoreCancelled):
        replay(mongo_client, entries(), ReplayOptions(writers=4, window_ops=window), cancel=cancel)
    assert [w.name for w in set(threading.enumerate()) - before if w.name.startswith("replay-writer")] == []
    assert mongo_client[db].c.count_documents({"_id": {"$gte": window}}) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "fast"}, "method is one of auto, applyOps, native, not 'fast'"),
        ({"writers": 17}, "writers is between 0 and 16, not 17"),
        ({"writers": -1}, "writers is between 0 and 16, not -1"),
        ({"window_ops": 0}, "window_ops is at least 1, not 0"),
        ({"until": Timestamp(1, 1), "before": Timestamp(2, 1)}, "give until or before, not both"),
    ],
)
def test_replay_options_out_of_range_are_refused_with_the_rule(options, message):
    with pytest.raises(ValueError) as info:
        ReplayOptions(**options)
    assert str(info.value) == message
    ReplayOptions(method="native", writers=16, window_ops=1)  # the edges are accepted
    ReplayOptions(writers=0, before=Timestamp(2, 1))


def test_the_apply_ops_method_sends_the_operations_and_fails_loudly_without_it(mongo_client, scratch_db):
    db = scratch_db()
    t = Timestamp(1_800_000_300, 1)
    # commands and the embedded server's update shape never go through applyOps
    native_only = [
        entry(Timestamp(t.time, 0), "c", f"{db}.$cmd", {"create": "c"}),
        entry(t, "u", f"{db}.c", {"$v": 2, "diff": {"updatedFields": {"a.b": 1}}}, o2={"_id": 1}),
    ]
    replay(mongo_client, native_only, ReplayOptions(method="applyOps"))
    assert mongo_client[db].c.find_one() == {"_id": 1, "a": {"b": 1}}
    with pytest.raises(ReplayError, match=r"applyOps of the batch starting here failed") as info:
        replay(mongo_client, [entry(t, "i", f"{db}.c", {"_id": 1})], ReplayOptions(method="applyOps"))
    assert info.value.ts == t and info.value.ns == f"{db}.c"


def test_a_time_series_collection_is_refused_like_the_native_restore(scratch_db):
    db = scratch_db()
    create = entry(
        Timestamp(1_800_000_400, 1), "c", f"{db}.$cmd", {"create": "m", "timeseries": {"timeField": "t"}}
    )
    assert "time-series" in plan_replay([create]).refused[0].reason


def test_numeric_field_names_and_dotted_names_in_the_embedded_servers_paths(mongo_client, scratch_db):
    source, target = scratch_db(), scratch_db()
    start = newest_ts(mongo_client)
    coll = mongo_client[source].c
    coll.insert_one({"_id": 1, "o": {"0": 1, "1": [1]}, "arr": [1, {"0": 2}]})
    coll.update_one(
        {"_id": 1}, {"$set": {"o.0": 5, "arr.1.0": 3, "o.1.0": 4}}
    )  # fields named 0 and indexes 0
    entries = entries_since(mongo_client, start)
    assert any("disambiguatedPaths" in e["o"].get("diff", {}) for e in decoded(entries) if e["op"] == "u")
    replay(mongo_client, entries, renamed(source, target))
    assert snapshot(mongo_client, target) == snapshot(mongo_client, source)
    dotted = entry(
        Timestamp(1_800_000_500, 1),
        "u",
        f"{source}.c",
        {"$v": 2, "diff": {"updatedFields": {"o.a.b": 1}, "disambiguatedPaths": {"o.a.b": ["o", "a.b"]}}},
        o2={"_id": 1},
    )
    assert "cannot address" in plan_replay([dotted]).refused[0].reason


# (the o of an update entry, the reason an operator reads)
REFUSED_UPDATES = [
    ({"$v": 2, "diff": {"updatedFields": 5}}, "updatedFields is not a document"),
    ({"$v": 2, "diff": {"removedFields": "a"}}, "removedFields is not a list of field paths"),
    ({"diff": {"updatedFields": 5}, "$v": 2.0}, "updatedFields is not a document"),  # read field by field
    (
        {"$v": 2, "diff": {"truncatedArrays": [{"field": "a"}]}},
        "truncatedArrays is not a list of {field, newSize}",
    ),
    (
        {"$v": 2, "diff": {"disambiguatedPaths": {"a.b": ["a", "b.c"]}}},
        "the path 'a.b' has a field name that a dotted path cannot address",
    ),
    ({"$v": 2, "diff": 5}, "a $v: 2 update without a single 'diff' document"),
    # servers write $v as an int32 (or a double): an int64 is not guessed at
    ({"$v": Int64(2), "diff": {"updatedFields": {"a": 1}}}, "an update of unknown format $v: None"),
    ({"$v": 3, "$set": {"a": 1}}, "an update of unknown format $v: 3"),
    ({"$set": {"a": 1}, "b": 1, "$frob": 1}, "an update with $frob, b (not update operators)"),
]


@pytest.mark.parametrize(("o", "reason"), REFUSED_UPDATES, ids=[r for _, r in REFUSED_UPDATES])
def test_an_update_of_a_shape_the_engine_does_not_know_is_refused_with_the_reason(o, reason):
    plan = plan_replay([entry(Timestamp(1_800_000_550, 1), "u", "x.c", o, o2={"_id": 1})])
    assert [e.reason for e in plan.refused] == [reason]


def test_an_index_built_over_an_array_field_replays(mongo_client, scratch_db):
    """The embedded server logs that build with ``multikey: true`` in the spec, which createIndexes
    refuses as an unknown field: the replay leaves it out (the server sets it as the index needs)."""
    source, target = scratch_db(), scratch_db()
    start = newest_ts(mongo_client)
    mongo_client[source].c.insert_one({"_id": 1, "tags": [1, 2]})
    mongo_client[source].c.create_index("tags")
    entries = entries_since(mongo_client, start)
    built = [spec for e in decoded(entries) if e["op"] == "c" for spec in e["o"].get("indexes", [])]
    assert [spec.get("multikey") for spec in built] == [True]
    replay(mongo_client, entries, renamed(source, target))
    assert snapshot(mongo_client, target) == snapshot(mongo_client, source)


def test_until_a_second_includes_the_whole_second(mongo_client, scratch_db):
    db = scratch_db()
    t = 1_800_000_600
    entries = [entry(Timestamp(t, i), "i", f"{db}.c", {"_id": i}) for i in (1, 2, 3)]
    entries.append(entry(Timestamp(t + 1, 1), "i", f"{db}.c", {"_id": 4}))
    result = replay(mongo_client, entries, ReplayOptions(until=through_second(t)))
    assert result.last_ts == Timestamp(t, 3) and result.stopped_at == Timestamp(t + 1, 1)
    assert sorted(d["_id"] for d in mongo_client[db].c.find()) == [1, 2, 3]
    with pytest.raises(ValueError, match="not both"):
        ReplayOptions(until=Timestamp(t, 1), before=Timestamp(t, 2))


def test_an_archives_oplog_replays_natively_through_the_same_engine(mongo_client, scratch_db):
    """ArchiveOplog (the mongodump archive's oplog) is planned and applied by this engine: the first
    entry (noted by the dump before it read) is in the data, the rest is applied."""
    db = scratch_db()
    t = 1_800_000_700
    entries = [
        entry(Timestamp(t, 1), "n", "", {"msg": "dump started"}),
        entry(Timestamp(t, 2), "i", f"{db}.c", {"_id": 3}),
        entry(Timestamp(t, 3), "u", f"{db}.c", {"$v": 2, "diff": {"updatedFields": {"x": 1}}}, o2={"_id": 3}),
        entry(
            Timestamp(t, 4),
            "c",
            f"{db}.$cmd",
            {"createIndexes": "c", "indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1"}]},
        ),
        entry(Timestamp(t, 5), "c", f"{db}.$cmd", {"frobnicate": 1}),
    ]
    archive = ArchiveOplog()
    for raw in entries:
        archive.add(raw)
    summary = archive.summary(archive.plan())
    assert (summary["entries"], summary["toApply"], summary["indexBuilds"], summary["skipped"]) == (
        5,
        2,
        1,
        1,
    )
    assert archive.plan().namespaces.keys() == {f"{db}.c"} and "frobnicate" in summary["unsupported"][0]
    archive.close()
    archive = ArchiveOplog()
    for raw in entries[:4]:
        archive.add(raw)
    result = archive.replay(mongo_client)
    archive.close()
    assert result == {"applied": 2, "indexBuilds": 1, "skipped": 1, "method": "native"}
    assert mongo_client[db].c.find_one() == {"_id": 3, "x": 1}


def test_one_collection_replayed_under_a_new_name_beside_the_live_one(history, mongo_client):
    """--ns-from db.people --ns-to db.people_restored, --ns-include db.people: the restored copy at a
    point in time, in the same database as the live collection, which went on changing."""
    source, entries, steps = history
    labels = [label for label, _, _ in steps]
    at = labels.index("update many")
    options = RestoreOptions(
        ns_include=(f"{source}.people",), ns_from=(f"{source}.people",), ns_to=(f"{source}.people_restored",)
    )
    result = replay(mongo_client, entries, ReplayOptions(until=steps[at][1], scope=ReplayScope.of(options)))
    assert set(result.namespaces) == {f"{source}.people_restored"}
    restored = snapshot(mongo_client, source)["people_restored"]
    mongo_client[source].drop_collection("people_restored")  # the source stays as the history left it
    assert restored == steps[at][2]["people"]
    assert snapshot(mongo_client, source)["people"] == steps[-1][2]["people"]  # the live one untouched


def test_paths_are_ordered_as_mongodb_applies_them():
    names = ["b", "10", "a.10", "9", "a.9", "05", "0", "1x", "a", "Z", "", "_", "a.b", "a.B"]
    items = [string(name, "") for name in names]
    assert [item.name for item in update_order(items)] == [
        "", "0", "05", "9", "10", "1x", "Z", "_", "a", "a.9", "a.10", "a.B", "a.b", "b",
    ]  # fmt: skip
