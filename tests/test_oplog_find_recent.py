"""``oplog find`` sees the last minute: the entries the archiver holds and has not stored (slices 60 s
long) are read from the server's own oplog after the newest stored entry, and each item says where it
was read; a server out of reach leaves the archive's part and says so."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer, free_port
from sidecar.pitr.capture.tailer import oplog
from sidecar.pitr.find.query import FindQuery
from sidecar.pitr.find.search import find_operations
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import oplog_dir
from tests.helpers import discard, run_cli, settings_for
from tests.pitr_support import archiving, wait_running, wait_until_stored

DB = "recentfind"
PATIENTS = f"{DB}.patients"


@dataclass
class Recent:
    settings: Settings
    archived_delete: Timestamp  # the first entry of the deleteMany stored in a slice
    fresh_delete: Timestamp  # the first entry of the one made while the archiver holds it


def _first_delete(client: pymongo.MongoClient, after: Timestamp | None) -> Timestamp:
    query: dict[str, Any] = {"op": "d", "ns": PATIENTS}
    if after is not None:
        query["ts"] = {"$gt": after}
    found = oplog(client).find_one(query, sort=[("$natural", 1)])
    assert found is not None
    return found["ts"]


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recent]:
    root = tmp_path_factory.mktemp("recent")
    server = EmbeddedServer(root / "data").start()
    quick = settings_for(server.uri, root, pitr="auto", pitr_slice_seconds=0.2)
    settings = dataclasses.replace(quick, pitr_slice_seconds=60.0)
    try:
        with pymongo.MongoClient(server.uri) as client:
            patients = client[DB].patients
            with archiving(quick) as runner:  # an older mistake, stored
                wait_running(runner)
                patients.insert_many([{"_id": n} for n in range(40)])
                patients.delete_many({"_id": {"$lt": 10}})
                wait_until_stored(quick, client)
            archived = _first_delete(client, None)
            with archiving(settings) as runner:  # 60 s slices from now on
                wait_running(runner)
                patients.insert_one({"_id": "between"})
                patients.delete_many({"_id": {"$gte": 20}})  # the mistake, a moment ago
                fresh = _first_delete(client, SliceCatalog(oplog_dir(settings)).last_position())
                yield Recent(settings, archived, fresh)
    finally:
        discard(server)


def _find(settings: Settings, **params: Any) -> dict[str, Any]:
    return find_operations(settings, FindQuery.parse([PATIENTS], op="delete", **params))


def test_a_delete_many_a_moment_ago_is_found_before_any_slice_holds_it(recent: Recent) -> None:
    stored = SliceCatalog(oplog_dir(recent.settings)).last_position()
    assert stored is not None and stored < recent.fresh_delete  # no slice holds it yet
    listing = _find(recent.settings)
    old, new = listing["items"]
    assert (old["kind"], old["count"], old["beforeOp"], old["source"]) == (
        "group",
        10,
        f"{recent.archived_delete.time}:{recent.archived_delete.inc}",
        "archive",
    )
    assert (new["kind"], new["count"], new["beforeOp"], new["source"]) == (
        "group",
        20,
        f"{recent.fresh_delete.time}:{recent.fresh_delete.inc}",
        "serverOplog",
    )
    server = listing["serverOplog"]
    assert server["searched"] and server["error"] is None and server["matches"] == 1
    assert (
        server["after"] == f"{stored.time}:{stored.inc}" and server["entriesRead"] >= 21
    )  # the insert and the 20 deletes
    assert listing["entriesRead"] >= 50  # the archive's part: 40 inserts, 10 deletes


def test_the_cli_marks_what_is_not_archived_yet(recent: Recent) -> None:
    result = run_cli(recent.settings, "oplog", "find", "--ns", PATIENTS, "--op", "delete")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[1].startswith("and the server's oplog after ")
        and "1 match (marked [not archived yet])" in (lines[1])
    )
    old = next(line for line in lines if line.startswith(f"10 deletes on {PATIENTS}"))
    new = next(line for line in lines if line.startswith(f"20 deletes on {PATIENTS}"))
    assert not old.endswith("[not archived yet]") and new.endswith("[not archived yet]")


def test_until_before_the_archives_end_leaves_the_server_alone(recent: Recent) -> None:
    listing = _find(recent.settings, until=f"{recent.archived_delete.time}:{recent.archived_delete.inc}")
    assert [i["source"] for i in listing["items"]] == ["archive"]
    assert listing["serverOplog"]["searched"] is False
    assert listing["serverOplog"]["skipped"] == "the archive reaches past until"


def test_a_server_out_of_reach_leaves_the_archives_part_and_says_so(recent: Recent) -> None:
    away = dataclasses.replace(
        recent.settings,
        mongodb_uri=f"mongodb://sidecar:s3cret-pass@127.0.0.1:{free_port()}/?directConnection=true",
        connect_timeout_seconds=0.5,
    )
    listing = _find(away)
    assert [i["source"] for i in listing["items"]] == ["archive"]
    error = listing["serverOplog"]["error"]
    assert error.startswith("the server's oplog could not be read: ") and "s3cret-pass" not in error
    result = run_cli(away, "oplog", "find", "--ns", PATIENTS, "--op", "delete")
    assert result.returncode == 0 and "WARNING: not archived yet, not searched: " in result.stdout
