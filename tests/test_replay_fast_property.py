"""Property: the parallel replay (windows, chains per document, writers) leaves the same databases as
the ordered one, byte for byte (documents, indexes, options), at random cut points.

Two kinds of random history, each replayed twice into fresh databases, ordered (``writers=0``) and
parallel (random writers and window sizes, so windows end mid-history too):

- run on the embedded server and read back from its oplog: several collections; inserts (``_id``\\s
  of several numeric types that the server takes as one), updates of every operator, pipeline
  updates, replacements, deletes; a unique secondary index whose values move between documents;
  transactions; create, drop, rename and index commands. What the server refuses is not in the oplog.
- hand-built mongod entries, which the embedded server cannot log: ``$v: 2`` diffs (shaped like
  mongod's calculator's, so the replay reads or folds the document they apply to), ``$v: 1`` updates,
  replacements, inserts and deletes.
"""

from __future__ import annotations

import contextlib
import uuid

import bson
import pymongo
from bson.int64 import Int64
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from sidecar.engine.replay.engine import replay
from tests.replay_support import entries_since, entry, newest_ts, renamed, snapshot
from tests.test_replay_property import _object_diff

IDS = [1, 2, 3, 1.0, Int64(2), "a"]
COLLECTIONS = ["a", "b", "u", "u"]  # u has the unique index on k
values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["x", "y"]),
    st.lists(st.integers(0, 3), max_size=3),
    st.fixed_dictionaries({"p": st.integers(0, 2)}),
)
ids = st.sampled_from(IDS)
coll = st.sampled_from(COLLECTIONS)
paths = st.sampled_from(["k", "v", "o.p", "arr", "arr.1", "w"])

crud = st.one_of(
    st.tuples(st.just("insert"), coll, ids, st.integers(0, 3), values),
    st.tuples(st.just("set"), coll, ids, paths, values),
    st.tuples(st.just("unset"), coll, ids, paths),
    st.tuples(st.just("inc"), coll, ids, st.sampled_from(["n", "o.p"])),
    st.tuples(st.just("push"), coll, ids, st.integers(0, 3)),
    st.tuples(st.just("pull"), coll, ids, st.integers(0, 3)),
    st.tuples(st.just("rename"), coll, ids),
    st.tuples(st.just("truncate"), coll, ids, st.integers(0, 2)),
    st.tuples(st.just("replace"), coll, ids, st.integers(0, 3), values),
    st.tuples(st.just("delete"), coll, ids),
    st.tuples(st.just("move_k"), ids, ids),  # k from one document to another, after other writes
    st.tuples(st.just("insert_delete"), st.sampled_from(["b", "c"]), ids),  # the collection is all it leaves
)
commands = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["c", "a"])),
    st.tuples(st.just("drop"), st.sampled_from(["a", "b", "c"])),
    st.tuples(st.just("rename_coll"), st.sampled_from(["a", "c"]), st.sampled_from(["b", "c", "d"])),
    st.tuples(st.just("index"), st.sampled_from(["a", "b"]), st.sampled_from(["v", "n"])),
    st.tuples(st.just("drop_index"), st.sampled_from(["a", "b"]), st.sampled_from(["v", "n"])),
)
inserts = st.tuples(st.just("insert"), coll, ids, st.integers(0, 3), values)
steps = st.one_of(
    inserts,
    inserts,
    crud,
    crud,
    crud,
    crud,
    commands,
    st.tuples(st.just("transaction"), st.lists(crud, min_size=1, max_size=3)),
)


def _do(db: pymongo.database.Database, step: tuple, session: object = None) -> None:
    kind, rest = step[0], step[1:]
    s = {"session": session}
    if kind == "insert":
        name, _id, k, v = rest
        db[name].insert_one({"_id": _id, "k": k, "v": v, "arr": [1, 2, 3], "o": {"p": 1}}, **s)
    elif kind == "set":
        db[rest[0]].update_one({"_id": rest[1]}, {"$set": {rest[2]: rest[3]}}, **s)
    elif kind == "unset":
        db[rest[0]].update_one({"_id": rest[1]}, {"$unset": {rest[2]: ""}}, **s)
    elif kind == "inc":
        db[rest[0]].update_one({"_id": rest[1]}, {"$inc": {rest[2]: 1}}, **s)
    elif kind == "push":
        db[rest[0]].update_one({"_id": rest[1]}, {"$push": {"arr": rest[2]}}, **s)
    elif kind == "pull":
        db[rest[0]].update_one({"_id": rest[1]}, {"$pull": {"arr": rest[2]}}, **s)
    elif kind == "rename":
        db[rest[0]].update_one({"_id": rest[1]}, {"$rename": {"v": "o.moved"}}, **s)
    elif kind == "truncate":
        db[rest[0]].update_one({"_id": rest[1]}, [{"$set": {"arr": {"$slice": ["$arr", rest[2]]}}}], **s)
    elif kind == "replace":
        db[rest[0]].replace_one({"_id": rest[1]}, {"k": rest[2], "r": rest[3]}, **s)
    elif kind == "delete":
        db[rest[0]].delete_one({"_id": rest[1]}, **s)
    elif kind == "move_k":
        here = db.u.find_one({"_id": rest[0]}, session=session)
        if here is not None and "k" in here:
            db.u.update_one({"_id": rest[0]}, {"$inc": {"n": 1}}, **s)
            db.u.update_one({"_id": rest[0]}, {"$set": {"k": 99}}, **s)
            db.u.update_one({"_id": rest[1]}, {"$set": {"k": here["k"]}}, **s)
    elif kind == "insert_delete":
        db[rest[0]].insert_one({"_id": rest[1]}, **s)
        db[rest[0]].delete_one({"_id": rest[1]}, **s)
    else:
        _command(db, step)


def _command(db: pymongo.database.Database, step: tuple) -> None:
    kind, rest = step[0], step[1:]
    if kind == "create":
        db.create_collection(rest[0])
    elif kind == "drop":
        db.drop_collection(rest[0])
    elif kind == "rename_coll":
        db[rest[0]].rename(rest[1])
    elif kind == "index":
        db[rest[0]].create_index(rest[1])
    elif kind == "drop_index":
        db[rest[0]].drop_index(f"{rest[1]}_1")
    elif kind == "transaction":
        with db.client.start_session() as session, session.start_transaction():
            for inner in rest[0]:
                _do(db, inner, session)


def _run(db: pymongo.database.Database, step: tuple) -> None:
    with contextlib.suppress(OperationFailure, pymongo.errors.CollectionInvalid):
        _do(db, step)  # what the server refuses is not in the oplog


def _same_after_both(client: pymongo.MongoClient, entries: list[bytes], source: str, cut: Timestamp, **fast):
    ordered, parallel = f"{source}_o", f"{source}_p"
    replay(client, entries, renamed(source, ordered, until=cut, writers=0))
    written: list[int] = []
    result = replay(client, entries, renamed(source, parallel, until=cut, **fast), on_batch=written.append)
    assert sum(written) == result.operations  # on_batch hears of every operation once it is written
    want, got = snapshot(client, ordered), snapshot(client, parallel)
    client.drop_database(ordered)
    client.drop_database(parallel)
    return want, got


fast_options = st.fixed_dictionaries({"writers": st.integers(1, 4), "window_ops": st.integers(1, 12)})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(steps, min_size=5, max_size=40),
    cuts=st.lists(st.floats(0, 1), min_size=1, max_size=2),
    fast=fast_options,
)
@example(  # k moves from 1 to 2 after 1's other writes: applied in rounds, 2 would take k while 1 holds it
    history=[("insert", "u", 1, 1, 0), ("insert", "u", 2, 2, 0), ("move_k", 1, 2)],
    cuts=[1.0],
    fast={"writers": 1, "window_ops": 10},
)
def test_the_parallel_replay_of_server_histories_equals_the_ordered_one(mongo_client, history, cuts, fast):
    source = f"fast{uuid.uuid4().hex[:8]}"
    db = mongo_client[source]
    start = newest_ts(mongo_client)
    db.u.create_index("k", unique=True)
    for step in history:
        _run(db, step)
    entries = entries_since(mongo_client, start)
    for fraction in cuts:
        cut = bson.decode(entries[min(int(fraction * len(entries)), len(entries) - 1)])["ts"]
        want, got = _same_after_both(mongo_client, entries, source, cut, **fast)
        assert got == want, (history, cut)
    mongo_client.drop_database(source)


# -- mongod's shapes, hand-built ---------------------------------------------------------------------

documents = st.fixed_dictionaries(
    {"k": st.integers(0, 3)}, optional={"v": values, "o": st.fixed_dictionaries({"p": values}), "w": values}
)
mongod_ops = st.lists(
    st.tuples(st.sampled_from(["i", "diff", "v1", "replace", "d"]), st.sampled_from([1, 2, 3, 4]), documents),
    min_size=1,
    max_size=25,
)


def _base_document(_id: int) -> SON:
    return SON([("_id", _id), ("k", 9), ("o", SON([("p", [_id])]))])


def _mongod_entries(ns: str, ops: list[tuple[str, int, dict]], base: list[int]) -> list[bytes]:
    """The ops as mongod logs them, diffs from a model of each document (None: not there)."""
    model: dict[int, SON | None] = {_id: _base_document(_id) for _id in base}
    out = []
    for n, (kind, _id, body) in enumerate(ops, start=1):
        ts, doc = Timestamp(1_800_001_000, n), SON([("_id", _id), *body.items()])
        pre = model.get(_id)
        if kind == "i" or (kind != "d" and pre is None):
            out.append(entry(ts, "i", ns, doc))
        elif kind == "diff":  # some fields kept, some changed, added or removed
            doc = SON([*((k, v) for k, v in pre.items() if k != "w"), *body.items()])
            diff = _object_diff(pre, doc)
            if diff is None:
                continue
            out.append(entry(ts, "u", ns, SON([("$v", 2), ("diff", diff)]), o2={"_id": _id}))
        elif kind == "v1":
            doc = SON([*pre.items()])
            doc.update(body)
            out.append(entry(ts, "u", ns, SON([("$v", 1), ("$set", body)]), o2={"_id": _id}))
        elif kind == "replace":
            out.append(entry(ts, "u", ns, doc, o2={"_id": _id}))
        else:
            out.append(entry(ts, "d", ns, {"_id": _id}))
            doc = None
        model[_id] = doc
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=mongod_ops,
    base=st.lists(st.sampled_from([1, 2, 3]), unique=True),
    cut=st.integers(1, 25),
    fast=fast_options,
)
def test_the_parallel_replay_of_mongod_shapes_equals_the_ordered_one(mongo_client, ops, base, cut, fast):
    """``base`` documents are there before the replay (a diff that begins a chain reads them)."""
    source = f"fastm{uuid.uuid4().hex[:8]}"
    entries = _mongod_entries(f"{source}.c", ops, base)
    if not entries:
        return
    until = bson.decode(entries[min(cut, len(entries)) - 1])["ts"]
    for target in (f"{source}_o", f"{source}_p"):
        mongo_client[target].c.insert_many([_base_document(i) for i in base] or [{"_id": 0}])
    want, got = _same_after_both(mongo_client, entries, source, until, **fast)
    assert got == want, (ops, base)
