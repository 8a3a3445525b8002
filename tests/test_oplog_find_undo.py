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
from tests.helpers import run_cli, settings_for
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
    before = snapshot(client, DB)
    patients.delete_many({"n": {"$gte": 10}})  # the mistake
    patients.insert_one({"_id": "after", "n": -1})  # and the work that went on after it
    patients.update_one({"_id": 3}, {"$set": {"late": True}})
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
            service = BackupService(settings)
            service.run_backup(service.new_job("backup", "manual"))
            with archiving(settings) as runner:
                wait_running(runner)
                before, after = _script(client, settings)
        yield Mistake(settings, server.uri, before, after)
    finally:
        server.stop()


def _sidecar(mistake: Mistake, argv: list[str]) -> subprocess.CompletedProcess[str]:
    assert argv[0] == "sidecar", argv
    return run_cli(mistake.settings, *argv[1:])


def _printed_undo(mistake: Mistake) -> tuple[str, str]:
    """The two undo lines of the deleteMany's group: (beside the live data, in place)."""
    found = _sidecar(mistake, ["sidecar", "oplog", "find", "--ns", PATIENTS, "--op", "delete"])
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"70 deletes on {PATIENTS}"))
    beside, in_place = lines[head + 1], lines[head + 2]
    assert beside.startswith("    undo as ") and in_place.startswith("    or in place, discarding ")
    return beside.split(": ", 1)[1], in_place.split(": ", 1)[1]


def _state(uri: str) -> dict[str, Any]:
    with pymongo.MongoClient(uri) as client:
        return snapshot(client, DB)


def test_the_printed_undo_runs_as_printed_and_gives_the_state_before_the_mistake(mistake: Mistake) -> None:
    beside, in_place = _printed_undo(mistake)
    # first beside the live data, under the name it prints; the live collection keeps its state
    renamed = shlex.split(beside)[shlex.split(beside).index("--ns-to") + 1]
    assert renamed.startswith(f"{PATIENTS}_before_")
    result = _sidecar(mistake, shlex.split(beside))
    assert result.returncode == 0, result.stderr
    state = _state(mistake.uri)
    collection = renamed.partition(".")[2]
    assert state[collection]["documents"] == mistake.before["patients"]["documents"]
    assert state[collection]["indexes"] == mistake.before["patients"]["indexes"]
    assert state["patients"] == mistake.after["patients"]
    # then in place: the live collection as it was, the writes after the mistake discarded
    assert "--drop" in shlex.split(in_place) and "--ns-to" not in shlex.split(in_place)
    result = _sidecar(mistake, shlex.split(in_place))
    assert result.returncode == 0, result.stderr
    assert "safety backup taken first" in result.stdout
    assert _state(mistake.uri)["patients"] == mistake.before["patients"]
