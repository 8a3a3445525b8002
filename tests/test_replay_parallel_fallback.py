"""The parallel replay's fallback: a window in which the server refuses a write is applied again, whole,
in oplog order, and leaves what the ordered path leaves (or fails where the ordered path fails).

The order rules apply a namespace with a unique secondary index in order up front; here they are told
that ``dst.u`` is not tied (as when its index is built on the target while the replay runs), so the
window goes in rounds: inserts first, so the insert of k 1 comes before the update that frees k 1.
"""

from __future__ import annotations

import uuid

import bson
import pymongo
import pytest
from bson.son import SON
from bson.timestamp import Timestamp

from sidecar.engine.replay.apply import Translator
from sidecar.engine.replay.parallel import OrderRules, ParallelApplier
from sidecar.engine.replay.units import Reader, ReplayError
from tests.replay_support import entry, renamed, snapshot

T = 1_800_003_000


@pytest.fixture
def target(mongo_client: pymongo.MongoClient):
    name = f"fallback{uuid.uuid4().hex[:8]}"
    db = mongo_client[name]
    db.u.create_index("k", unique=True)
    db.u.insert_many([{"_id": 1, "k": 1}, {"_id": 2, "k": 2}])
    yield name
    mongo_client.drop_database(name)


def _apply_in_rounds(client: pymongo.MongoClient, target: str, entries: list[bytes]) -> ParallelApplier:
    translator = Translator(renamed("src", target).scope)
    applier = ParallelApplier(client, writers=1)
    applier.rules.known[f"{target}.u"] = False  # the rules do not see the unique index (see the module doc)
    try:
        for unit in Reader().units(entries):
            applier.apply(unit, translator.actions(unit))
        applier.flush()
    finally:
        applier.close()
    return applier


def test_a_window_whose_write_the_server_refuses_is_applied_again_in_oplog_order(mongo_client, target):
    entries = [
        entry(Timestamp(T, 1), "u", "src.u", {"$v": 1, "$set": {"k": 9}}, o2={"_id": 1}),
        entry(Timestamp(T, 2), "i", "src.u", {"_id": 3, "k": 1}),  # takes the k that _id 1 freed
        entry(Timestamp(T, 3), "u", "src.u", {"$v": 1, "$set": {"n": 1}}, o2={"_id": 2}),
    ]
    applier = _apply_in_rounds(mongo_client, target, entries)
    assert applier.windows_in_order == 1
    assert _documents(mongo_client, target) == [
        {"_id": 1, "k": 9},
        {"_id": 2, "k": 2, "n": 1},
        {"_id": 3, "k": 1},
    ]


def test_a_write_the_ordered_path_refuses_too_fails_at_its_entry(mongo_client, target):
    entries = [
        entry(Timestamp(T, 1), "u", "src.u", {"$v": 1, "$set": {"n": 1}}, o2={"_id": 2}),
        entry(Timestamp(T, 2), "i", "src.u", {"_id": 3, "k": 1}),  # _id 1 still holds k 1
    ]
    with pytest.raises(ReplayError) as refused:
        _apply_in_rounds(mongo_client, target, entries)
    assert refused.value.ts == Timestamp(T, 2)
    assert "duplicate key" in refused.value.reason.lower()
    assert _documents(mongo_client, target) == [{"_id": 1, "k": 1}, {"_id": 2, "k": 2, "n": 1}]


def test_the_order_rules_tie_a_namespace_by_a_unique_index_a_cap_or_a_collation(mongo_client, target):
    db = mongo_client[target]
    db.create_collection("capped", capped=True, size=65536)
    db.create_collection("ci", collation={"locale": "en", "strength": 2})
    db.plain.create_index("k")  # not unique: documents stay apart
    db.create_collection("clustered", clusteredIndex={"key": {"_id": 1}, "unique": True})
    rules = OrderRules(mongo_client)
    names = ("u", "capped", "ci", "plain", "clustered", "missing")
    assert {name: rules.ordered(f"{target}.{name}") for name in names} == {
        "u": True,
        "capped": True,
        "ci": True,
        "plain": False,
        "clustered": False,  # its _id_ index is listed as unique: that ties no two documents
        "missing": False,  # created by the window's first insert: no index but _id's
    }
    db.u.drop_index("k_1")
    assert rules.ordered(f"{target}.u") is True  # asked once per namespace ...
    rules.forget()
    assert rules.ordered(f"{target}.u") is False  # ... until a command


def _documents(client: pymongo.MongoClient, target: str) -> list[SON]:
    """The documents of ``target``.u in _id order, fields in their stored order."""
    raw = snapshot(client, target)["u"]["documents"]
    return [bson.decode(doc, codec_options=bson.CodecOptions(document_class=SON)) for doc in raw]
