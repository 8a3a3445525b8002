"""The parallel replay's partitioning (a secondary's: by namespace and document) and the entries the
``applyOps`` path sends each writer: no server (the embedded one has no ``applyOps``)."""

from __future__ import annotations

from collections import Counter

import bson
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.engine.replay.apply import Translator, apply_ops_entry
from sidecar.engine.replay.crud import Write
from sidecar.engine.replay.parallel import split
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import Reader
from sidecar.engine.restore_plan import Renamer
from tests.replay_support import entry

T = 1_800_002_000


def _writes(entries: list[bytes]) -> list[Write]:
    translator = Translator(ReplayScope(Renamer(["src.*"], ["dst.*"])))
    return [a for unit in Reader().units(entries) for a in translator.actions(unit)]


def _history() -> list[bytes]:
    out = []
    for n in range(400):
        ns = f"src.c{n % 3}"
        out.append(entry(Timestamp(T, 4 * n + 1), "i", ns, {"_id": n, "v": n}))
        out.append(entry(Timestamp(T, 4 * n + 2), "u", ns, {"$v": 1, "$set": {"w": 1}}, o2={"_id": float(n)}))
        out.append(entry(Timestamp(T, 4 * n + 3), "u", ns, {"$v": 1, "$set": {"w": 2}}, o2={"_id": Int64(n)}))
        out.append(
            entry(Timestamp(T, 4 * n + 4), "d", ns, {"_id": Decimal128(str(n))}, ui=bson.Binary(b"u" * 16, 4))
        )
    out.append(entry(Timestamp(T + 1, 1), "i", "src.c0", {"_id": {"k": 1}}))
    out.append(entry(Timestamp(T + 1, 2), "d", "src.c1", {"_id": {"k": 1.0}}))
    out.append(entry(Timestamp(T + 1, 3), "i", "src.tied", {"_id": 1}))
    out.append(entry(Timestamp(T + 1, 4), "i", "src.tied", {"_id": 2}))
    return out


def _where(shares: list[list[Write]]) -> dict[int, int]:
    return {id(w): n for n, share in enumerate(shares) for w in share}


def test_each_write_goes_to_one_writer_in_oplog_order_and_one_documents_writes_together():
    writes = _writes(_history())
    shares = split(writes, 4, lambda ns: ns == "dst.tied")
    where = _where(shares)
    assert sorted(id(w) for s in shares for w in s) == sorted(id(w) for w in writes)
    for share in shares:  # each share in oplog order
        assert [w.op.ts for w in share] == sorted(w.op.ts for w in share)
    by_document: dict[tuple[str, object], set[int]] = {}
    for w in writes[:1600]:  # 1, 1.0, NumberLong(1), NumberDecimal("1") are one document
        number = w.id_filter()["_id"]
        by_document.setdefault((w.target, str(int(str(number).split(".")[0]))), set()).add(where[id(w)])
    assert all(len(writers) == 1 for writers in by_document.values())
    assert min(Counter(where.values()).values()) > 100  # the documents are spread over all four
    tied = [where[id(w)] for w in writes if w.target == "dst.tied"]
    assert len(set(tied)) == 1  # a namespace tied by an index, a cap or a collation: one writer


def test_a_document_id_keeps_its_namespace_in_one_writer():
    writes = _writes(_history())
    shares = split(writes, 4, lambda ns: False)
    where = _where(shares)
    document_ids = [w for w in writes if isinstance(w.id_filter()["_id"], RawBSONDocument)]
    assert len(document_ids) == 2
    for w in document_ids:  # with every write of its namespace that has no key of its own
        assert hash(w.target) % 4 == where[id(w)]


def test_the_apply_ops_entries_are_renamed_without_their_uuid():
    writes = _writes(_history())
    sent = [
        bson.decode(apply_ops_entry(w).raw) for share in split(writes, 4, lambda ns: False) for w in share
    ]
    assert len(sent) == len(writes)
    assert all(e["ns"].startswith("dst.") and "ui" not in e for e in sent)
    assert Counter(e["op"] for e in sent) == Counter(w.op.op for w in writes)
