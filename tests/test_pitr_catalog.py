"""The slice catalog as an append-only log: a slice costs one appended line (the log is not rewritten),
a line torn by a crash is ignored and cut off by the next append, another reader (another process's
catalog object) sees appends and compactions, and compaction replays to the same document."""

from __future__ import annotations

import json
import os

import pytest
from bson.timestamp import Timestamp

from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.store.catalog import CatalogError


def entry(n: int) -> dict:
    return {
        "fileName": f"oplog-{n}.1-{n}.2.bson.gz",
        "first": {"t": n, "i": 1},
        "last": {"t": n, "i": 2},
        "prev": {"t": n - 1, "i": 2} if n > 1 else None,
        "locations": ["local"],
    }


def filled(tmp_path, count: int) -> SliceCatalog:
    catalog = SliceCatalog(tmp_path)
    for n in range(1, count + 1):
        catalog.add_slice(entry(n))
    return catalog


def test_a_slice_appends_one_line_and_rewrites_nothing(tmp_path):
    catalog = filled(tmp_path, 50)
    before = catalog.path.read_bytes()
    inode = os.stat(catalog.path).st_ino
    catalog.add_slice(entry(51))
    after = catalog.path.read_bytes()
    assert after.startswith(before) and os.stat(catalog.path).st_ino == inode
    assert json.loads(after[len(before) :]) == {"op": "slice", "slice": entry(51)}
    assert len(after.splitlines()) == 51 and catalog.last_position().time == 51


def test_a_second_archiver_breaking_the_chain_is_refused(tmp_path):
    catalog = filled(tmp_path, 3)
    with pytest.raises(CatalogError, match="second archiver"):
        catalog.add_slice(entry(7))
    assert len(catalog.slices()) == 3


def test_a_torn_last_line_is_ignored_and_cut_off_by_the_next_append(tmp_path):
    catalog = filled(tmp_path, 3)
    with open(catalog.path, "ab") as handle:
        handle.write(b'{"op": "slice", "slice": {"fileName": "oplog-4')  # killed mid-append
    reader = SliceCatalog(tmp_path)
    assert [s["fileName"] for s in reader.slices()] == [entry(n)["fileName"] for n in (1, 2, 3)]
    reader.add_slice(entry(4))
    lines = catalog.path.read_bytes().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    assert len(catalog.slices()) == 4  # the first object reads only what was added since its last read


def test_other_readers_follow_appends_drops_and_compaction(tmp_path):
    writer, reader = filled(tmp_path, 5), SliceCatalog(tmp_path)
    assert len(reader.slices()) == 5
    writer.add_gap({"from": {"t": 1, "i": 2}, "to": {"t": 2, "i": 1}, "cause": "oplog-rollover"})
    writer.mark_dropped({entry(1)["fileName"]: ["local"]}, gaps_before=None)
    writer.set_fields(entry(2)["fileName"], locations=["local", "s3"])
    document = reader.load()
    assert [s["fileName"] for s in document["slices"]] == [entry(n)["fileName"] for n in range(2, 6)]
    assert document["deleting"] == {entry(1)["fileName"]: ["local"]}
    assert document["slices"][0]["locations"] == ["local", "s3"] and len(document["gaps"]) == 1
    writer.mark_dropped({entry(2)["fileName"]: ["local"]}, gaps_before=Timestamp(2, 1))  # the gap ends there
    writer.compact()
    compacted = reader.load()
    assert compacted == writer.load()
    assert compacted["slices"][0]["locations"] == ["s3"] and set(compacted["deleting"]) == {
        entry(1)["fileName"],
        entry(2)["fileName"],
    }
    assert compacted["gaps"] == []
    assert len(writer.path.read_bytes().splitlines()) == 4 + 1  # the slices, the marks
    writer.mark_done({entry(1)["fileName"]: ["local"], entry(2)["fileName"]: ["local"]})
    assert reader.load()["deleting"] == {}


def test_an_unknown_change_is_a_clear_error(tmp_path):
    catalog = filled(tmp_path, 1)
    with open(catalog.path, "a") as handle:
        handle.write('{"op": "rename"}\n')
    with pytest.raises(CatalogError, match="unknown change 'rename'"):
        SliceCatalog(tmp_path).load()


def test_the_single_document_catalog_of_before_is_converted_on_first_read(tmp_path):
    gap = {"from": {"t": 1, "i": 2}, "to": {"t": 2, "i": 1}, "cause": "oplog-rollover"}
    legacy = tmp_path / "oplog-slices.json"
    legacy.write_text(json.dumps({"slices": [entry(1), entry(2)], "gaps": [gap]}))
    catalog = SliceCatalog(tmp_path)
    assert [s["fileName"] for s in catalog.slices()] == [entry(1)["fileName"], entry(2)["fileName"]]
    assert catalog.load()["gaps"] == [gap] and not legacy.exists()
    assert (tmp_path / "oplog-slices.json.migrated").is_file()
    catalog.add_slice(entry(3))
    assert len(catalog.path.read_bytes().splitlines()) == 4
