"""The replay's input reads each slice through into its spool (``point_input.PointInput``): the
entries after the base's point come back byte for byte and in order, past the spool's memory (on
disk), and a slice whose entries are not the catalog's count is refused by name."""

from __future__ import annotations

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.engine.replay.archive_oplog import SPOOL_MEMORY_BYTES
from sidecar.pitr.planning.point_input import PointInput, UnverifiedSlice
from sidecar.pitr.record.slices import SliceBuffer, SliceEntry, oplog_dir, write_slice
from tests.helpers import settings_for

NOTE = "x" * 2048


def _entry(ts: Timestamp) -> bytes:
    return bson.encode({"op": "n", "ns": "ward.notes", "o": {"msg": NOTE}, "ts": ts})


def _slice(settings, stamps: list[Timestamp], prev: Timestamp | None) -> SliceEntry:
    buffer = SliceBuffer(prev)
    for ts in stamps:
        buffer.add(RawBSONDocument(_entry(ts)), ts)
    return write_slice(settings, buffer)


@pytest.fixture
def settings(tmp_path):
    settings = settings_for("mongodb://127.0.0.1:1", tmp_path)
    oplog_dir(settings).mkdir(parents=True)
    return settings


def test_the_entries_after_the_base_point_come_back_in_order_through_the_spool_on_disk(settings):
    first = [Timestamp(100, i) for i in range(1, 301)]
    second = [Timestamp(101, i) for i in range(1, 401)]
    slices = [_slice(settings, first, None), _slice(settings, second, first[-1])]
    base_end = first[99]  # the first slice straddles the base's consistent point
    source = PointInput(settings, base_end, slices)
    try:
        source.read_slices()
        kept = first[100:] + second
        assert len(kept) * len(_entry(kept[0])) > SPOOL_MEMORY_BYTES  # the spool went to disk
        assert list(source.entries()) == [_entry(ts) for ts in kept]
        names = [name for name, _ in source.slice_entries()]
        assert names == [slices[0]["fileName"]] * 200 + [slices[1]["fileName"]] * 400
        assert source.count == 600
    finally:
        source.close()


def test_a_slice_whose_entries_are_not_the_catalogs_count_is_refused_by_name(settings):
    stored = _slice(settings, [Timestamp(100, i) for i in range(1, 4)], None)
    source = PointInput(settings, None, [{**stored, "entries": 4}])
    try:
        with pytest.raises(UnverifiedSlice, match="3 entries, the catalog says 4") as refused:
            source.read_slices()
        assert refused.value.slice == stored["fileName"]
    finally:
        source.close()
