"""Oplog shapes only mongod writes, built by hand from its documented formats and replayed natively on
the embedded server: ``$v: 2`` diffs (document_diff_serialization.h / document_diff_applier.cpp),
``$v: 1`` updates, transactions in ``applyOps`` entries (one entry; a ``partialTxn`` chain linked by
``prevOpTime``; prepared, then committed or aborted) and index builds as mongod logs them."""

from __future__ import annotations

import datetime
import struct

import bson
import pytest
from bson import Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.son import SON
from bson.timestamp import Timestamp

from sidecar.engine.replay.apply import apply_ops_entry
from sidecar.engine.replay.crud import crud_write
from sidecar.engine.replay.doc_diff import DiffError, apply_diff, validate_diff
from sidecar.engine.replay.engine import ReplayOptions, plan_replay, replay
from sidecar.engine.replay.units import OplogOp, ts_text
from tests.replay_support import RAW, entry
from tests.test_restore_support import scratch_db_fixture  # noqa: F401 - fixture

SON_CODEC = CodecOptions(document_class=SON)
T = 1_800_100_000
PRE = SON(
    [
        ("_id", 1),
        ("a", 1),
        ("b", SON([("c", 1), ("d", [1, 2, 3]), ("objs", [SON([("x", 1)]), SON([("x", 2)])])])),
        ("e", "x"),
        ("m", [[1, 2], [3]]),
    ]
)


def _son(pairs: list) -> SON:
    return SON(pairs)


def b(c=1, d=(1, 2, 3), objs=(1, 2)) -> SON:
    return SON(
        [("c", c), ("d", list(d)), ("objs", [SON([("x", x)]) if x is not None else None for x in objs])]
    )


# (label, diff, expected document)
CASES = [
    ("delete a field", {"d": {"e": False}}, [("_id", 1), ("a", 1), ("b", b()), ("m", [[1, 2], [3]])]),
    (
        "update in place",
        {"u": {"a": 2}},
        [("_id", 1), ("a", 2), ("b", b()), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "update of a missing field appends it",
        {"u": {"z": 0}},
        [("_id", 1), ("a", 1), ("b", b()), ("e", "x"), ("m", [[1, 2], [3]]), ("z", 0)],
    ),
    (
        "insert moves an existing field to the end",
        _son([("i", _son([("a", 9), ("new", 1)]))]),
        [("_id", 1), ("b", b()), ("e", "x"), ("m", [[1, 2], [3]]), ("a", 9), ("new", 1)],
    ),
    (
        "updates not found come before inserts",
        _son([("u", {"y": 1}), ("i", {"x": 2})]),
        [("_id", 1), ("a", 1), ("b", b()), ("e", "x"), ("m", [[1, 2], [3]]), ("y", 1), ("x", 2)],
    ),
    (
        "all sections at once",
        _son(
            [
                ("d", {"a": False}),
                ("u", {"e": "y"}),
                ("i", {"f": [1]}),
                ("sb", _son([("u", {"c": 5}), ("i", {"g": True})])),
            ]
        ),
        [
            ("_id", 1),
            ("b", SON([("c", 5), ("d", [1, 2, 3]), ("objs", b()["objs"]), ("g", True)])),
            ("e", "y"),
            ("m", [[1, 2], [3]]),
            ("f", [1]),
        ],
    ),
    (
        "nested object field removed",
        {"sb": {"d": {"c": False}}},
        [
            ("_id", 1),
            ("a", 1),
            ("b", SON([("d", [1, 2, 3]), ("objs", b()["objs"])])),
            ("e", "x"),
            ("m", [[1, 2], [3]]),
        ],
    ),
    (
        "array grown by updates past its end (padded with null)",
        {"sb": {"sd": _son([("a", True), ("u3", 4), ("u5", 6)])}},
        [("_id", 1), ("a", 1), ("b", b(d=[1, 2, 3, 4, None, 6])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "array shrunk by l",
        {"sb": {"sd": _son([("a", True), ("l", 1)])}},
        [("_id", 1), ("a", 1), ("b", b(d=[1])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "array grown by l",
        {"sb": {"sd": _son([("a", True), ("l", 5)])}},
        [("_id", 1), ("a", 1), ("b", b(d=[1, 2, 3, None, None])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "array shrunk and changed",
        {"sb": {"sd": _son([("a", True), ("l", 2), ("u0", "zero")])}},
        [("_id", 1), ("a", 1), ("b", b(d=["zero", 2])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "array element changed",
        {"sb": {"sd": _son([("a", True), ("u1", {"k": 1})])}},
        [("_id", 1), ("a", 1), ("b", b(d=[1, SON([("k", 1)]), 3])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "object in an array, by sub-diff",
        {"sb": {"sobjs": _son([("a", True), ("s1", {"u": {"x": 20}, "i": {"y": 1}})])}},
        [
            ("_id", 1),
            ("a", 1),
            ("b", SON([("c", 1), ("d", [1, 2, 3]), ("objs", [SON([("x", 1)]), SON([("x", 20), ("y", 1)])])])),
            ("e", "x"),
            ("m", [[1, 2], [3]]),
        ],
    ),
    (
        "array in an array, by sub-diff",
        {
            "sm": _son(
                [("a", True), ("s0", _son([("a", True), ("l", 1)])), ("s1", _son([("a", True), ("u2", 5)]))]
            )
        },
        [("_id", 1), ("a", 1), ("b", b()), ("e", "x"), ("m", [[1], [3, None, 5]])],
    ),
    (
        "a sub-diff past the array's end gives null",
        {"sb": {"sd": _son([("a", True), ("s4", {"u": {"q": 1}})])}},
        [("_id", 1), ("a", 1), ("b", b(d=[1, 2, 3, None, None])), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
    (
        "a sub-diff over another type gives null",
        {"se": {"u": {"q": 1}}, "sa": _son([("a", True), ("u0", 1)])},
        [("_id", 1), ("a", None), ("b", b()), ("e", None), ("m", [[1, 2], [3]])],
    ),
    (
        "a sub-diff of a missing field is ignored",
        {"smissing": {"u": {"q": 1}}},
        [("_id", 1), ("a", 1), ("b", b()), ("e", "x"), ("m", [[1, 2], [3]])],
    ),
]


def _encode(value) -> bytes:
    return bson.encode(SON(value) if isinstance(value, list) else value)


@pytest.mark.parametrize(("label", "diff", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_documented_diff_gives_mongods_document(label, diff, expected):
    got = apply_diff(bson.encode(PRE), _encode(diff))
    assert bson.decode(got, SON_CODEC) == SON(expected)
    assert got == _encode(expected)


def _raw(*elements: bytes) -> bytes:
    body = b"".join(elements) + b"\0"
    return struct.pack("<i", len(body) + 4) + body


def _el(name: str, value: object) -> bytes:
    """One element as the driver encodes it."""
    return bson.encode({name: value})[4:-1]


def test_a_diff_keeps_the_fields_it_does_not_name_byte_for_byte_whatever_their_type():
    oid = ObjectId("0123456789abcdef01234567")
    others = [
        _el("_id", 1),
        _el("d", 1.5),
        _el("s", "text"),
        _el("o", {"x": 1}),
        _el("arr", [1, "x"]),
        _el("bin", Binary(b"\x00\x01", 4)),
        b"\x06undef\0",  # undefined
        _el("oid", oid),
        _el("t", True),
        _el("dt", datetime.datetime(2026, 12, 8, tzinfo=datetime.UTC)),
        _el("null", None),
        _el("re", Regex("a.b", "imx")),
        b"\x0cptr\0" + struct.pack("<i", 4) + b"a.b\0" + oid.binary,  # DBPointer
        _el("code", Code("f()")),
        b"\x0esym\0" + struct.pack("<i", 4) + b"sym\0",  # symbol
        _el("scoped", Code("g()", {"v": 1})),
        _el("i", 7),
        _el("ts", Timestamp(5, 6)),
        _el("l", Int64(8)),
        _el("dec", Decimal128("1.5")),
        _el("min", MinKey()),
        _el("max", MaxKey()),
    ]
    pre = _raw(*others, _el("a", 1))
    assert apply_diff(pre, _encode({"u": {"a": 2}})) == _raw(*others, _el("a", 2))


@pytest.mark.parametrize(
    ("writers", "there_before"),
    [(4, False), (4, True), (0, False)],
    ids=["parallel, inserted in the window", "parallel, there before (read first)", "in order"],
)
def test_the_diffs_replay_on_the_server_as_documented(mongo_client, scratch_db, writers, there_before):
    db = scratch_db()
    inserts, diffs = [], []
    for n, (_, diff, _) in enumerate(CASES):
        pre = SON(PRE)
        pre["_id"] = n
        inserts.append(entry(Timestamp(T, 2 * n + 1), "i", f"{db}.c", pre))
        diffs.append(entry(Timestamp(T, 2 * n + 2), "u", f"{db}.c", {"$v": 2, "diff": diff}, o2={"_id": n}))
    options = ReplayOptions(method="native", writers=writers)
    if there_before:
        replay(mongo_client, inserts, options)
        entries = diffs
    else:
        entries = [e for pair in zip(inserts, diffs, strict=True) for e in pair]
    result = replay(mongo_client, entries, options)
    assert result.namespaces[f"{db}.c"] == {"update": len(CASES)} | (
        {} if there_before else {"insert": len(CASES)}
    )
    coll = mongo_client[db].get_collection("c", codec_options=RAW)
    for n, (label, _, expected) in enumerate(CASES):
        want = SON(expected)
        want["_id"] = n
        assert bytes(coll.find_one({"_id": n}).raw) == bson.encode(want), label
    # again: a diff applied twice gives the same document (the entries are idempotent)
    replay(mongo_client, entries, options)
    assert coll.count_documents({}) == len(CASES)


@pytest.mark.parametrize("writers", [4, 0], ids=["parallel", "in order"])
def test_a_diff_on_a_missing_document_is_applied_to_its_id(mongo_client, scratch_db, writers):
    db = scratch_db()
    u = entry(
        Timestamp(T, 100),
        "u",
        f"{db}.c",
        {"$v": 2, "diff": {"i": {"x": 1}, "sy": {"u": {"z": 1}}}},
        o2={"_id": 7},
    )
    replay(mongo_client, [u], ReplayOptions(writers=writers))
    assert mongo_client[db].c.find_one() == {"_id": 7, "x": 1}


# (diff, the reason an operator reads)
PAST_LENGTH = "an array diff modifies an index at or past its new length"
REFUSED_DIFFS = [
    ({"b": {"f": Binary(b"x")}}, "unknown section 'b' in a $v: 2 diff"),  # time-series column diffs
    ({"q": {"x": 1}}, "unknown section 'q' in a $v: 2 diff"),
    ({"u": 5}, "the 'u' section of a $v: 2 diff is not an object"),
    ({"sx": 5}, "sub-diff 'sx' of a $v: 2 diff is not an object"),
    ({"sx": _son([("a", True), ("u2", 1), ("u1", 1)])}, "array diff indexes out of order at 'u1'"),
    ({"sx": _son([("a", True), ("l", 1), ("u3", 1)])}, PAST_LENGTH),
    ({"sx": _son([("a", True), ("l", -1)])}, PAST_LENGTH),
    ({"sx": _son([("a", True), ("l", "2")])}, "the new length (l) of an array diff must be an int32"),
    ({"sx": _son([("a", False), ("u0", 1)])}, "an array diff must start with a: true"),
    ({"sx": _son([("a", True), ("z1", 1)])}, "unexpected field 'z1' in an array diff"),
    ({"sx": _son([("a", True), ("s1", 5)])}, "unexpected field 's1' in an array diff"),
    ({"u": {"a": 1}, "d": {"a": False}}, "field 'a' appears twice in a $v: 2 diff"),
    ({"u": {"x": 1}, "sx": {"u": {"q": 1}}}, "field 'x' appears twice in a $v: 2 diff"),  # set and sub-diff
    ({"sy": {"sz": {}}}, "an empty $v: 2 diff"),  # down to the deepest sub-diff
    ({}, "an empty $v: 2 diff"),
]


@pytest.mark.parametrize(("diff", "reason"), REFUSED_DIFFS, ids=[r for _, r in REFUSED_DIFFS])
def test_a_malformed_or_unsupported_diff_is_refused_up_front(diff, reason):
    with pytest.raises(DiffError) as info:
        validate_diff(_encode(diff))
    assert str(info.value) == reason
    plan = plan_replay([entry(Timestamp(T, 1), "u", "x.c", {"$v": 2, "diff": diff}, o2={"_id": 1})])
    assert [(e.ts, e.ns, e.reason) for e in plan.refused] == [(Timestamp(T, 1), "x.c", reason)]


@pytest.mark.parametrize("writers", [4, 0], ids=["parallel", "in order"])
def test_a_diff_then_a_modifier_update_of_one_document_in_one_window(mongo_client, scratch_db, writers):
    """The parallel path folds the diff into a replacement and sends the $set after it."""
    db = scratch_db()
    mongo_client[db].c.insert_one(SON([("_id", 1), ("a", 1), ("b", {"c": 1})]))
    entries = [
        entry(Timestamp(T, 200), "u", f"{db}.c", {"$v": 2, "diff": {"u": {"a": 2}}}, o2={"_id": 1}),
        entry(Timestamp(T, 201), "u", f"{db}.c", {"$v": 1, "$set": {"x": 1}}, o2={"_id": 1}),
    ]
    replay(mongo_client, entries, ReplayOptions(writers=writers))
    coll = mongo_client[db].get_collection("c", codec_options=SON_CODEC)
    assert list(coll.find()) == [SON([("_id", 1), ("a", 2), ("b", SON([("c", 1)])), ("x", 1)])]


def test_v1_and_unversioned_modifier_updates(mongo_client, scratch_db):
    db = scratch_db()
    ns = f"{db}.c"
    entries = [
        entry(Timestamp(T, 1), "i", ns, SON([("_id", 1), ("a", 1), ("b", [1, 2])])),
        entry(Timestamp(T, 2), "u", ns, SON([("$v", 1), ("$set", {"a": 2, "c.d": 1})]), o2={"_id": 1}),
        entry(Timestamp(T, 3), "u", ns, SON([("$v", 1), ("$unset", {"b": True})]), o2={"_id": 1}),
        entry(Timestamp(T, 4), "u", ns, SON([("$set", {"e": 5})]), o2={"_id": 1}),
        entry(Timestamp(T, 5), "u", ns, SON([("_id", 1), ("whole", True)]), o2={"_id": 1}),
        entry(Timestamp(T, 6), "u", ns, SON([("$set", {"after": 1})]), o2={"_id": 1}),
    ]
    replay(mongo_client, entries)
    assert mongo_client[db].c.find_one() == {"_id": 1, "whole": True, "after": 1}
    replay(mongo_client, entries[:4])
    assert mongo_client[db].c.find_one() == {"_id": 1, "a": 2, "c": {"d": 1}, "e": 5}
    plan = plan_replay([entry(Timestamp(T, 7), "u", ns, SON([("$v", 3), ("$set", {})]), o2={"_id": 1})])
    assert "$v: 3" in plan.refused[0].reason


LSID = {"id": Binary(b"0123456789abcdef", 4), "uid": Binary(b"u" * 32, 0)}
NULL_OPTIME = {"ts": Timestamp(0, 0), "t": -1}


def _inner(op: str, ns: str, o: dict, **more) -> SON:
    doc = SON([("op", op), ("ns", ns), ("ui", Binary(b"u" * 16, 4)), ("o", o)])
    doc.update(more)
    return doc


def _apply_ops(ts: Timestamp, ops: list, prev: Timestamp | None = None, txn: int = 1, **flags) -> bytes:
    o = SON([("applyOps", ops)])
    o.update(flags)
    prev_optime = {"ts": prev, "t": 1} if prev is not None else NULL_OPTIME
    return entry(ts, "c", "admin.$cmd", o, lsid=LSID, txnNumber=txn, prevOpTime=prev_optime)


def test_mongod_transactions_apply_at_their_commit(mongo_client, scratch_db):
    db = scratch_db()
    a, c = f"{db}.a", f"{db}.c"
    t = lambda i: Timestamp(T, i)  # noqa: E731
    entries = [
        # one-entry transaction
        _apply_ops(t(1), [_inner("i", a, {"_id": 1}), _inner("i", c, {"_id": 1})]),
        # a large transaction: two partial entries, committed by the final applyOps at t(5)
        _apply_ops(t(2), [_inner("i", a, {"_id": 2})], txn=2, partialTxn=True),
        entry(t(3), "i", a, {"_id": 99}),  # another writer in between
        _apply_ops(t(4), [_inner("i", c, {"_id": 2})], prev=t(2), txn=2, partialTxn=True),
        _apply_ops(
            t(5),
            [_inner("u", a, {"$v": 2, "diff": {"i": {"tx": 2}}}, o2={"_id": 2})],
            prev=t(4),
            txn=2,
            count=3,
        ),
        # prepared, then committed; prepared, then aborted
        _apply_ops(t(6), [_inner("d", a, {"_id": 1})], txn=3, prepare=True),
        entry(
            t(7),
            "c",
            "admin.$cmd",
            {"commitTransaction": 1, "commitTimestamp": t(7)},
            lsid=LSID,
            txnNumber=3,
            prevOpTime={"ts": t(6), "t": 1},
        ),
        _apply_ops(t(8), [_inner("d", c, {"_id": 1})], txn=4, prepare=True),
        entry(
            t(9),
            "c",
            "admin.$cmd",
            {"abortTransaction": 1},
            lsid=LSID,
            txnNumber=4,
            prevOpTime={"ts": t(8), "t": 1},
        ),
        # a large transaction not committed by the end of the range
        _apply_ops(t(10), [_inner("i", c, {"_id": 3})], txn=5, partialTxn=True),
    ]

    def state() -> tuple[list, list]:
        return (
            sorted(d["_id"] for d in mongo_client[db].a.find()),
            sorted(d["_id"] for d in mongo_client[db].c.find()),
        )

    expected = {
        1: ([1], [1]),
        4: ([1, 99], [1]),  # the partial entries are held
        5: ([1, 2, 99], [1, 2]),  # the commit brings them all
        6: ([1, 2, 99], [1, 2]),  # prepared: held
        7: ([2, 99], [1, 2]),
        10: ([2, 99], [1, 2]),  # aborted: dropped; uncommitted at the end: not applied
    }
    for until, want in expected.items():
        mongo_client.drop_database(db)
        result = replay(mongo_client, entries, ReplayOptions(until=t(until)))
        assert state() == want, until
    assert result.pending_transactions == 1 and result.transactions == 3
    assert mongo_client[db].a.find_one({"_id": 2}) == {"_id": 2, "tx": 2}


def test_a_transaction_begun_before_the_range_is_refused(mongo_client, scratch_db):
    db = scratch_db()
    commit = _apply_ops(Timestamp(T, 5), [_inner("i", f"{db}.a", {"_id": 1})], prev=Timestamp(T, 4), txn=9)
    plan = plan_replay([commit])
    assert plan.refused and "began before it" in plan.refused[0].reason
    prepared_commit = entry(
        Timestamp(T, 6), "c", "admin.$cmd", {"commitTransaction": 1}, lsid=LSID, txnNumber=8
    )
    assert "prepared transaction" in plan_replay([prepared_commit]).refused[0].reason


def _refusal(entries: list[bytes]) -> tuple[Timestamp | None, str, str]:
    refused = plan_replay(entries).refused
    assert len(refused) == 1, refused
    return refused[0].ts, refused[0].ns, refused[0].reason


def test_each_broken_transaction_is_refused_at_its_entry_with_the_reason() -> None:
    """Where, on what and why: the refusal an operator reads (a transaction replays whole or not at all)."""
    ns = "txdb.a"
    t = lambda i: Timestamp(T, i)  # noqa: E731
    begun_before = _apply_ops(t(5), [_inner("i", ns, {"_id": 1})], prev=t(4), txn=9)
    assert _refusal([begun_before]) == (
        t(5),
        "admin.$cmd",
        f"a transaction entry whose previous entry ({ts_text(t(4))}) is not in the replayed range: "
        "the transaction began before it",
    )
    first = _apply_ops(t(2), [_inner("i", ns, {"_id": 2})], txn=2, partialTxn=True)
    astray = _apply_ops(t(6), [_inner("i", ns, {"_id": 3})], prev=t(3), txn=2, partialTxn=True)
    assert _refusal([first, astray]) == (
        t(6),
        "admin.$cmd",
        f"a transaction entry that follows {ts_text(t(3))}, but the previous entry of its transaction "
        f"is {ts_text(t(2))}",
    )
    commit = entry(t(7), "c", "admin.$cmd", {"commitTransaction": 1}, lsid=LSID, txnNumber=8)
    assert _refusal([commit]) == (
        t(7),
        "admin.$cmd",
        "commitTransaction of a prepared transaction that is not in the replayed range",
    )


def test_index_builds_as_mongod_logs_them(mongo_client, scratch_db):
    db = scratch_db()
    cmd = f"{db}.$cmd"
    entries = [
        entry(
            Timestamp(T, 1),
            "c",
            cmd,
            SON([("create", "c"), ("idIndex", {"v": 2, "key": {"_id": 1}, "name": "_id_"})]),
        ),
        # mongod 4.2: one spec inline, with its ns
        entry(
            Timestamp(T, 2),
            "c",
            cmd,
            SON([("createIndexes", "c"), ("v", 2), ("key", {"a": 1}), ("name", "a_1"), ("ns", f"{db}.c")]),
        ),
        # 4.4+: two-phase builds
        entry(
            Timestamp(T, 3),
            "c",
            cmd,
            SON(
                [
                    ("startIndexBuild", "c"),
                    ("indexBuildUUID", Binary(b"i" * 16, 4)),
                    ("indexes", [{"v": 2, "key": {"b": 1}, "name": "b_1"}]),
                ]
            ),
        ),
        entry(
            Timestamp(T, 4),
            "c",
            cmd,
            SON(
                [
                    ("commitIndexBuild", "c"),
                    ("indexBuildUUID", Binary(b"i" * 16, 4)),
                    ("indexes", [{"v": 2, "key": {"b": 1}, "name": "b_1", "unique": True}]),
                ]
            ),
        ),
        entry(Timestamp(T, 5), "c", cmd, SON([("dropIndexes", "c"), ("index", "a_1")])),
        entry(Timestamp(T, 6), "c", cmd, SON([("deleteIndexes", "c"), ("index", "never_there")])),
        entry(Timestamp(T, 7), "n", "", {"msg": "periodic noop"}),
    ]
    result = replay(mongo_client, entries)
    assert result.skipped == 2  # startIndexBuild, the no-op
    indexes = {ix["name"]: ix for ix in mongo_client[db].c.list_indexes()}
    assert sorted(indexes) == ["_id_", "b_1"] and indexes["b_1"]["unique"] is True


def test_an_apply_ops_entry_is_renamed_without_its_uuid():
    op = OplogOp(
        Timestamp(T, 1),
        bson.decode(entry(Timestamp(T, 1), "i", "a.b", {"_id": 1}, ui=Binary(b"u" * 16, 4)), RAW),
    )
    sent = bson.decode(apply_ops_entry(crud_write(op, "x.y")).raw)
    assert sent["ns"] == "x.y" and "ui" not in sent and sent["o"] == {"_id": 1} and sent["op"] == "i"


def test_batched_retryable_writes_are_not_a_transaction(mongo_client, scratch_db):
    """mongod 7.0+ logs a batch of retryable writes as applyOps entries with multiOpType: 1, linked
    by prevOpTime like a transaction's but each applied on its own."""
    db = scratch_db()
    o = {"applyOps": [_inner("i", f"{db}.a", {"_id": 1})]}
    prev = {"ts": Timestamp(T, 1), "t": 1}
    first = entry(
        Timestamp(T, 2), "c", "admin.$cmd", o, lsid=LSID, txnNumber=1, prevOpTime=prev, multiOpType=1
    )
    plan = plan_replay([first])
    assert not plan.refused and plan.transactions == 0
    replay(mongo_client, [first])
    assert mongo_client[db].a.find_one() == {"_id": 1}
