"""The shared helpers of issue 19 on their own, without a server: the restore request recorded the
same from the command line and the API, the one file lock, the one BSON walker, the one storage
interface, the one index comparison."""

from __future__ import annotations

import io
import logging

import bson
import pytest

from sidecar.archive.bsonstream import CutDocument, count_documents, read_documents, split_documents
from sidecar.cli import build_parser
from sidecar.cli.restore import request_of
from sidecar.integrity.compare import Wording, index_differences, index_signature, index_signatures
from sidecar.pitr.planning.restore_point import PointTarget
from sidecar.service.restore_request import RestoreRequest
from sidecar.store.filelock import FileLock, is_locked
from sidecar.store.objects import LOCAL, S3, StoreError
from sidecar.store.retention import Removal
from sidecar.store.storage import LocalStorage, remove_copies
from tests.helpers import settings_for


def test_a_restore_is_recorded_with_the_same_keys_from_the_cli_and_from_the_api(tmp_path):
    settings = settings_for("mongodb://127.0.0.1:9", tmp_path)
    flags = "--ns-include shop.* --ns-from shop.* --ns-to copy.* --dry-run --no-safety-backup --engine native"
    args = build_parser().parse_args(["restore", "a.gz", *flags.split()])
    body = {
        "fileName": "a.gz",
        "nsInclude": ["shop.*"],
        "nsFrom": ["shop.*"],
        "nsTo": ["copy.*"],
        "dryRun": True,
        "safetyBackup": False,
        "engine": "native",
    }
    from_cli = request_of(args, settings).as_json()
    from_api = RestoreRequest.from_json(body, file_name="a.gz").for_settings(settings).as_json()
    assert from_cli == from_api
    assert from_cli == {**body, "nsExclude": [], "drop": False, "oplogReplay": True}


def test_a_restore_to_a_point_is_recorded_by_its_point_and_the_engine_is_decided_once(tmp_path):
    settings = settings_for("mongodb://127.0.0.1:9", tmp_path, engine="mongodump")
    args = build_parser().parse_args(["restore", "--before-op", "1733011200:3"])
    recorded = request_of(args, settings).as_json()
    assert recorded["pointInTime"] == PointTarget.before_op("1733011200:3").as_json()
    assert "fileName" not in recorded and recorded["engine"] == "mongorestore"
    with pytest.raises(ValueError, match="engine must be native or mongorestore"):
        RestoreRequest(engine="mongodump").for_settings(settings)


def test_a_second_holder_of_the_file_lock_is_refused_and_reads_the_holder(tmp_path):
    path = tmp_path / "held.lock"
    assert not is_locked(path)
    first = FileLock(path)
    assert first.acquire(wait=False)
    first.record("pid 42")
    second = FileLock(path)
    assert not second.acquire(wait=False) and second.holder() == "pid 42"
    assert is_locked(path)
    first.release()
    assert not is_locked(path)
    with second:
        assert is_locked(path)
    with pytest.raises(RuntimeError):
        second.record("not held")


def test_the_bson_walker_names_where_a_stream_is_cut():
    one, two = bson.encode({"n": 1}), bson.encode({"n": 2, "s": "x" * 10})
    data = one + two
    assert [bytes(d) for d in split_documents(data)] == [one, two]
    assert list(read_documents(io.BytesIO(data))) == [one, two] and count_documents(data) == 2
    for walk in (
        lambda: list(split_documents(data[:-1])),
        lambda: list(read_documents(io.BytesIO(data[:-1]))),
    ):
        with pytest.raises(CutDocument) as cut:
            walk()
        assert (cut.value.number, cut.value.offset, cut.value.size) == (2, len(one), len(two))
    with pytest.raises(CutDocument) as short:
        list(split_documents(one + b"\x05\x00"))
    assert (short.value.number, short.value.size) == (2, -1)
    with pytest.raises(CutDocument):
        list(read_documents(io.BytesIO(data), max_size=len(one)))


class _Unreachable:
    name = S3

    def __init__(self) -> None:
        self.calls = 0

    def delete(self, name: str) -> None:
        self.calls += 1
        raise StoreError("the store is down", S3, "unreachable")


def test_copies_are_removed_through_their_place_and_a_place_out_of_reach_is_tried_once(tmp_path, caplog):
    (tmp_path / "a.gz").write_bytes(b"x")
    bucket = _Unreachable()
    removals = [
        Removal(n, "completed", "2024-01-01T00:00:00.000Z", "old", d)
        for n, d in (("a.gz", LOCAL), ("a.gz", S3), ("b.gz", S3), ("c.gz", "elsewhere"), ("gone.gz", LOCAL))
    ]
    with caplog.at_level(logging.WARNING):
        done = remove_copies(removals, {LOCAL: LocalStorage(tmp_path), S3: bucket}, logging.getLogger("t"))
    assert [(r.file_name, r.destination) for r in done] == [("a.gz", LOCAL), ("gone.gz", LOCAL)]
    assert not (tmp_path / "a.gz").exists() and bucket.calls == 1
    assert "retention could not remove a.gz from s3: the store is down" in caplog.text


def test_index_differences_name_each_side_as_its_wording_says():
    wording = Wording(
        missing="{ns}: no {name}", unexpected="{ns}: extra {name}", differs="{ns}: {have} != {want}"
    )
    have = index_signatures([{"name": "a", "key": {"a": 1}}, {"name": "b", "key": {"b": 1}, "v": 2}])
    want = index_signatures([{"name": "a", "key": {"a": 1.0}}, {"name": "c", "key": {"c": 1}}])
    assert index_differences("db.c", have, want, wording) == ["db.c: extra b", "db.c: no c"]
    want["a"] = index_signatures([{"name": "a", "key": {"a": -1}}])["a"]
    assert index_differences("db.c", have, want, wording)[0] == (
        "db.c: {'name': 'a', 'key': [('a', 1.0)]} != {'name': 'a', 'key': [('a', -1.0)]}"
    )


def test_an_index_is_the_same_whatever_its_version_namespace_or_entry_format_say():
    """An archive of an older server has v 1 and ns in its specs; the server restored into has v 2."""
    archived = {"v": 1, "ns": "db.c", "name": "a", "key": {"a": 1, "b": -1}, "unique": True}
    restored = {"v": 2, "name": "a", "key": {"a": 1, "b": -1}, "unique": True, "entryFormat": 1}
    expected = {"name": "a", "unique": True, "key": [("a", 1.0), ("b", -1.0)]}
    assert index_signature(archived) == index_signature(restored) == expected
