"""Property: random update sequences applied to a document by the server, and from the server's
oplog by the replay's translation, give the same document, byte for byte.

Each update uses one operator (``$set``, ``$unset``, ``$inc``, ``$push`` with ``$each``/``$slice``,
``$pop``, ``$pull``, ``$addToSet``, ``$rename``, ``$max``, ``$mul``), a pipeline truncation, or a full
replacement, on paths into nested objects and arrays, past array ends included; updates the server
refuses (a path through a scalar, ``$inc`` of a string...) are simply not in the oplog. Byte for
byte, with one path per update and with several, through one operator or several: the updates list
their paths in MongoDB's order (``mongodb_order``), where the embedded server, which appends new
fields in the order an update lists them, agrees with MongoDB 5.0+ (docs/pitr-replay.md, Limits).

A second property checks the mongod ``$v: 2`` applier against a diff computed from two random
documents the way mongod's diff calculator shapes it: applying it to the first gives the second.
"""

from __future__ import annotations

import uuid

import bson
import pymongo
import pytest
from bson.son import SON
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo.errors import OperationFailure

from sidecar.engine.namespaces import Renamer
from sidecar.engine.replay.doc_diff import apply_diff
from sidecar.engine.replay.engine import ReplayOptions, replay
from sidecar.engine.replay.scope import ReplayScope
from tests.replay_support import RAW, entries_since, newest_ts


@pytest.fixture(name="mongo_client", scope="module")
def own_oplog_client(module_mongo_client: pymongo.MongoClient) -> pymongo.MongoClient:
    """Every example reads the oplog twice: from a server whose oplog holds only this module's writes."""
    return module_mongo_client


PATHS = [
    "a",
    "b",
    "o",
    "o.x",
    "o.new",
    "o.y",
    "o.y.1",
    "o.y.2.z",
    "arr",
    "arr.0",
    "arr.3.k",
    "arr.6",
    "n.m.p",
]
ARRAYS = ["arr", "o.y", "fresh"]
BASE = SON(
    [
        ("_id", 1),
        ("a", 1),
        ("o", SON([("x", 1), ("y", [1, 2, SON([("z", 1)])])])),
        ("arr", [1, 2, 3, SON([("k", 1)])]),
        ("s", "t"),
    ]
)

scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["s", "", "ü"]), st.none(), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=2)
    ),
    max_leaves=4,
)


def mongodb_order(path: str) -> tuple:
    """MongoDB 5.0+ applies an update's paths level by level, names lexicographically, numbers
    numerically (these paths hold no zero-padded numbers)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.split("."))


def _update(operator: str, paths: list[str], value: object) -> dict:
    return {operator: {p: value for p in sorted(set(paths), key=mongodb_order)}}


def _several_operators(set_paths: list[str], inc_path: str, n: int, value: object) -> dict:
    """A $set and an $inc in one update, the operators listed so that all paths are in MongoDB's order."""
    sets = {p: value for p in set_paths if p != inc_path}
    before = {p: v for p, v in sets.items() if mongodb_order(p) < mongodb_order(inc_path)}
    if before and len(before) < len(sets):  # the $inc's path between two $set paths: no listing is in
        sets = before  # MongoDB's order, so keep the $set paths before it ($set 9, b with $inc 10)
    inc = {"$inc": {inc_path: n}}
    set_part = {"$set": dict(sorted(sets.items(), key=lambda item: mongodb_order(item[0])))} if sets else {}
    first = not sets or mongodb_order(inc_path) < min(mongodb_order(p) for p in sets)
    return {**inc, **set_part} if first else {**set_part, **inc}


def updates(paths_per_update: int) -> st.SearchStrategy:
    paths = st.lists(st.sampled_from(PATHS), min_size=1, max_size=paths_per_update)
    return st.one_of(
        st.builds(lambda ps, v: _update("$set", ps, v), paths, values),
        st.builds(lambda ps: _update("$unset", ps, ""), paths),
        st.builds(lambda p, n: {"$inc": {p: n}}, st.sampled_from(PATHS), st.integers(-3, 3)),
        st.builds(lambda p, n: {"$mul": {p: n}}, st.sampled_from(PATHS), st.integers(0, 2)),
        st.builds(lambda p, n: {"$max": {p: n}}, st.sampled_from(PATHS), st.integers(-2, 4)),
        st.builds(
            lambda p, each, cut: {
                "$push": {p: {"$each": each, **({"$slice": cut} if cut is not None else {})}}
            },
            st.sampled_from(ARRAYS),
            st.lists(values, max_size=3),
            st.one_of(st.none(), st.integers(-4, 6)),
        ),
        st.builds(lambda p, end: {"$pop": {p: end}}, st.sampled_from(ARRAYS), st.sampled_from([1, -1])),
        st.builds(lambda p, v: {"$pull": {p: v}}, st.sampled_from(ARRAYS), scalars),
        st.builds(lambda p, v: {"$addToSet": {p: v}}, st.sampled_from(ARRAYS), values),
        st.builds(
            lambda a, b: {"$rename": {a: b}},
            st.sampled_from(["a", "s", "o.x", "b"]),
            st.sampled_from(["b", "z", "o.w", "moved.k", "n.m.k"]),  # into a parent, an existing or a new one
        ),
        st.builds(
            lambda p, n: [{"$set": {p: {"$slice": [f"${p}", n]}}}],
            st.sampled_from(["arr", "o.y"]),
            st.integers(0, 3),
        ),
        st.builds(lambda v: SON([("a", v), ("arr", [1, v])]), values),
        *([into_a_new_parent, several_operators] if paths_per_update > 1 else []),
    )


# A $rename into a parent that did not exist and a $set beside it: the embedded server's diff then sets
# the new parent whole and a path under it (the replay must not send both in one $set).
into_a_new_parent = st.builds(
    lambda a, parent, v: {"$rename": {a: f"{parent}.k"}, "$set": {f"{parent}.v": v}},
    st.sampled_from(["a", "s", "b"]),
    st.sampled_from(["moved", "o", "n.m"]),
    values,
)


NEW_FIELDS = ["b", "c", "o.new", "o.q", "n.m.p", "9", "10"]
several_operators = st.builds(
    _several_operators,
    st.lists(st.sampled_from(NEW_FIELDS + PATHS), min_size=1, max_size=3),
    st.sampled_from(NEW_FIELDS),
    st.integers(-3, 3),
    values,
)


def _apply(coll: pymongo.collection.Collection, update: object) -> None:
    try:
        if isinstance(update, SON):
            coll.replace_one({"_id": 1}, update)
        else:
            coll.update_one({"_id": 1}, update)
    except OperationFailure:
        pass  # refused by the server: not in the oplog


def _server_and_replay(client: pymongo.MongoClient, sequence: list) -> tuple[bytes, bytes]:
    """The document after ``sequence`` on the server, and after its replay from the oplog (raw)."""
    db = client["replay_property"]
    name = f"c{uuid.uuid4().hex[:8]}"
    source, target = db[name].with_options(codec_options=RAW), db[f"{name}_r"].with_options(codec_options=RAW)
    start = newest_ts(client)
    source.insert_one(BASE)
    for update in sequence:
        _apply(source, update)
    scope = ReplayScope(Renamer([f"{db.name}.{name}"], [f"{db.name}.{name}_r"]), (f"{db.name}.{name}",))
    replay(client, entries_since(client, start), ReplayOptions(scope=scope))
    want, got = bytes(source.find_one({"_id": 1}).raw), bytes(target.find_one({"_id": 1}).raw)
    source.drop()
    target.drop()
    return want, got


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(updates(paths_per_update=1), min_size=1, max_size=8))
def test_random_updates_replay_to_the_servers_document(mongo_client, sequence):
    want, got = _server_and_replay(mongo_client, sequence)
    assert got == want, (sequence, bson.decode(got), bson.decode(want))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(updates(paths_per_update=3), min_size=1, max_size=8))
@example(sequence=[{"$rename": {"a": "moved.k"}, "$set": {"moved.v": 1}}])
@example(sequence=[{"$set": {"flag": "young"}, "$push": {"tags": "pitr"}}])  # the update
@example(sequence=[{"$inc": {"9": 1, "10": 1}}, {"$set": {"b": 1, "c": 2, "n.m.p": 3}}])
@example(sequence=[{"$set": {"a": []}}, _several_operators(["9", "b"], "10", 0, [])])  # found by a run
def test_updates_of_several_paths_replay_to_the_servers_document(mongo_client, sequence):
    """Several new fields in one update, through one operator or several, byte for byte: the server's
    updatedFields does not list them in the order it appended them, the replay applies MongoDB's."""
    want, got = _server_and_replay(mongo_client, sequence)
    assert got == want, (sequence, bson.decode(got), bson.decode(want))


# -- the mongod applier against diffs shaped like mongod's calculator's ---------------------------

documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=4).map(
            lambda d: SON(d.items())
        ),
    ),
    max_leaves=10,
)


def _array_diff(pre: list, post: list) -> SON | None:
    diff = SON([("a", True)])
    if len(post) != len(pre):
        diff["l"] = len(post)
    for i, value in enumerate(post):
        if i < len(pre) and _same(pre[i], value):
            continue
        sub = _sub_diff(pre[i], value) if i < len(pre) else None
        diff[f"s{i}" if sub is not None else f"u{i}"] = sub if sub is not None else value
    return diff if len(diff) > 1 else None


def _sub_diff(pre: object, post: object) -> SON | None:
    if isinstance(pre, SON) and isinstance(post, SON):
        return _object_diff(pre, post)
    if isinstance(pre, list) and isinstance(post, list):
        return _array_diff(pre, post)
    return None


def _same(x: object, y: object) -> bool:
    return bson.encode({"v": x}) == bson.encode({"v": y})


def _object_diff(pre: SON, post: SON) -> SON | None:
    """Deletes, updates in place, inserts (fields new, or whose position must change), sub-diffs."""
    deletes = SON((k, False) for k in pre if k not in post)
    kept = [k for k in pre if k in post]
    in_order = [k for k in post if k in pre]
    # the longest prefix of kept fields whose order is unchanged stays in place; the rest are re-inserted
    stay = set()
    for a, b in zip(kept, in_order, strict=True):
        if a != b:
            break
        stay.add(a)
    updates, inserts, subs = SON(), SON(), SON()
    after_moved = False
    for k in post:
        if k in stay and not after_moved:
            if _same(pre[k], post[k]):
                continue
            sub = _sub_diff(pre[k], post[k])
            if sub is not None:
                subs["s" + k] = sub
            else:
                updates[k] = post[k]
        else:
            after_moved = True
            inserts[k] = post[k]
    diff = SON()
    for section, body in (("d", deletes), ("u", updates), ("i", inserts)):
        if body:
            diff[section] = body
    diff.update(subs)
    return diff if diff else None


@settings(max_examples=300, deadline=None)
@given(
    pre=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), documents, max_size=5),
    post=st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), documents, max_size=5),
)
def test_a_mongod_diff_takes_its_pre_image_to_its_post_image(pre, post):
    pre_doc, post_doc = SON([("_id", 1), *pre.items()]), SON([("_id", 1), *post.items()])
    diff = _object_diff(pre_doc, post_doc)
    if diff is None:
        return
    assert apply_diff(bson.encode(pre_doc), bson.encode(diff)) == bson.encode(post_doc)
