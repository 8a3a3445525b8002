"""The undo that ``sidecar oplog find`` prints, run exactly as printed (split as a shell splits it) on a
live embedded server: first beside the live data under the new name it names, then in place with
``--drop``; each gives the collection as it was just before the deleteMany."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest

from sidecar.config import Settings
from sidecar.embedded import EmbeddedServer
from sidecar.service import BackupService
from tests.helpers import discard, run_cli, settings_for
from tests.pitr_support import archiving, wait_running, wait_until_stored
from tests.replay_support import snapshot

DB = "undoclinic"
PATIENTS = f"{DB}.patients"


@dataclass
class Mistake:
    settings: Settings
    uri: str
    before: dict[str, Any]  # the database just before the deleteMany
    after: dict[str, Any]  # and once the writes after it are done


def _script(client: pymongo.MongoClient, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    patients = client[DB].patients
    patients.insert_many([{"_id": n, "n": n, "ward": n % 3} for n in range(50, 80)])
    patients.update_many({"ward": 1}, {"$set": {"seen": True}, "$push": {"tags": "x"}})
    client[DB].visits.insert_one({"_id": "late", "patient": 3})
    before = snapshot(client, DB)
    patients.delete_many({"n": {"$gte": 10}})  # the mistake
    patients.insert_one({"_id": "after", "n": -1})  # and the work that went on after it
    patients.update_one({"_id": 3}, {"$set": {"late": True}})
    client[DB].visits.drop()  # and another one
    wait_until_stored(settings, client)
    return before, snapshot(client, DB)


@pytest.fixture(scope="module")
def mistake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mistake]:
    root = tmp_path_factory.mktemp("undo")
    server = EmbeddedServer(root / "data").start()
    try:
        settings = settings_for(
            server.uri, root, pitr="auto", pitr_slice_seconds=0.2, verify_after_backup="off"
        )
        with pymongo.MongoClient(server.uri) as client:
            client[DB].patients.insert_many([{"_id": n, "n": n, "ward": n % 3} for n in range(50)])
            client[DB].patients.create_index("ward")
            client[DB].visits.insert_many([{"_id": n, "patient": n} for n in range(5)])
            service = BackupService(settings)
            service.run_backup(service.new_job("backup", "manual"))
            with archiving(settings) as runner:
                wait_running(runner)
                before, after = _script(client, settings)
        yield Mistake(settings, server.uri, before, after)
    finally:
        discard(server)


def _sidecar(mistake: Mistake, argv: list[str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "sidecar", argv
    return run_cli(mistake.settings, *argv[1:])


def _printed_undo(mistake: Mistake, ns: str, op: str, item: str) -> tuple[str, str]:
    """The two undo lines under the listed ``item``: (beside the live data, in place)."""
    found = _sidecar(mistake, ["sidecar", "oplog", "find", "--ns", ns, "--op", op])
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if item in line)
    beside, in_place = lines[head + 1], lines[head + 2]
    assert beside.startswith("    undo as ") and in_place.startswith("    or in place, discarding ")
    return beside.split(": ", 1)[1], in_place.split(": ", 1)[1]


def _state(uri: str) -> dict[str, Any]:
    with pymongo.MongoClient(uri) as client:
        return snapshot(client, DB)


def _run_both(mistake: Mistake, printed: tuple[str, str], name: str) -> None:
    """Beside the live data under the name it prints, then in place: each the state before."""
    beside, in_place = (shlex.split(line) for line in printed)
    renamed = beside[beside.index("--ns-to") + 1]
    assert renamed.startswith(f"{DB}.{name}_before_")
    result = _sidecar(mistake, beside)
    assert result.returncode == 0, result.stderr
    state = _state(mistake.uri)
    collection = renamed.partition(".")[2]
    assert state[collection]["documents"] == mistake.before[name]["documents"]
    assert state[collection]["indexes"] == mistake.before[name]["indexes"]
    assert state.get(name) == mistake.after.get(name)  # the live collection as it is
    # then in place: the live collection as it was, what was written to it since discarded
    assert "--drop" in in_place and "--ns-to" not in in_place
    result = _sidecar(mistake, in_place)
    assert result.returncode == 0, result.stderr
    assert ("safety backup taken first" in result.stdout) == (name in mistake.after)  # of what it replaces
    assert _state(mistake.uri)[name] == mistake.before[name]


def test_the_printed_undo_of_a_delete_many_runs_as_printed(mistake: Mistake) -> None:
    _run_both(mistake, _printed_undo(mistake, PATIENTS, "delete", f"70 deletes on {PATIENTS}"), "patients")


def test_the_printed_undo_of_a_dropped_collection_runs_as_printed(mistake: Mistake) -> None:
    assert "visits" not in mistake.after
    _run_both(mistake, _printed_undo(mistake, f"{DB}.visits", "command", f"drop  {DB}.visits"), "visits")
