"""Every shell block of the runbooks (tests/runbooks.py says which and how they are marked) run as
written, in the environment the docs name, against a real incident: ``sidecar serve`` (its archiver
running) on an embedded replica set with the sample data, two base backups with a point-in-time
history between and after them (a bad delete among ordinary writes), the stock tools of
``../shared/tools``, ``jq`` and ``age``. Only the variables the docs tell the reader to set get the
test's values: the API's address and token, the point and the operation to undo, the server to
restore into.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest

from sidecar.embedded import EmbeddedServer, free_port
from sidecar.sampledata import load_sample_data
from tests.helpers import discard, settings_for
from tests.pitr_support import wait_until_stored
from tests.replay_support import newest_ts, oplog
from tests.runbooks import KINDS, Block, all_blocks
from tests.test_api_sigterm import call

STOCK_TOOLS = Path(__file__).resolve().parents[2] / "shared" / "tools" / "mongodb-database-tools" / "bin"
ADMIN, READ = "admin-token-for-runbooks-0000001", "read-token-for-runbooks-00000001"
BLOCKS = all_blocks()
# what a block prints that says it did its work, beyond exiting 0 (by a whole line of the block, its
# comment aside)
SAYS = {
    "sidecar pitr status": "archiver: running since",
    "sidecar verify --level pitr": "pitr verification passed",
    "sidecar list": "completed",
}


@dataclass
class Incident:
    root: Path
    env: dict[str, str]
    source: EmbeddedServer
    target: EmbeddedServer
    deleted: int  # documents the bad delete removed


def _tools_missing() -> str | None:
    missing = [t for t in ("jq", "age", "curl") if shutil.which(t) is None]
    if not (STOCK_TOOLS / "mongorestore").exists():
        missing.append(str(STOCK_TOOLS / "mongorestore"))
    return ", ".join(missing) or None


def _serve(root: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(root / "serve.log", "wb") as out:
        process = subprocess.Popen([env["SIDECAR"], "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    port = int(env["SIDECAR_PORT"])
    deadline = time.monotonic() + 60
    while not _archiving(port):
        assert process.poll() is None and time.monotonic() < deadline, (root / "serve.log").read_text()
        time.sleep(0.2)
    return process


def _archiving(port: int) -> bool:
    try:
        status, body = call(port, "GET", "/api/backup/pitr", ADMIN)
    except OSError:
        return False
    return status == 200 and bool(body["archiver"]["running"])


def _backup(port: int) -> None:
    status, body = call(port, "POST", "/api/backup/create?wait=true", ADMIN)
    assert status == 200, body


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    if missing := _tools_missing():
        pytest.skip(f"the runbooks' tools are missing: {missing} (bash deploy/local.sh test installs them)")
    root = tmp_path_factory.mktemp("incident")
    source = EmbeddedServer(root / "source").start()
    target = EmbeddedServer(root / "target").start()
    process = None
    try:
        client = pymongo.MongoClient(source.uri)
        load_sample_data(client)
        port = str(free_port())
        settings = settings_for(source.uri, root, pitr="auto")
        bin_dir = Path(sys.executable).parent
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")},
            "PATH": f"{STOCK_TOOLS}:{bin_dir}:{os.environ['PATH']}",
            "SIDECAR": str(bin_dir / "sidecar"),
            # the sidecar's own environment, where its command runs (the container's, the service's)
            "SIDECAR_MONGODB_URI": source.uri,
            "SIDECAR_BACKUP_DIR": str(root / "backups"),
            "SIDECAR_LOG_DIR": str(root / "logs"),
            "SIDECAR_ADMIN_TOKEN": ADMIN,
            "SIDECAR_READ_TOKEN": READ,
            "SIDECAR_PORT": port,
            "SIDECAR_HOST": "127.0.0.1",
            "SIDECAR_MIN_FREE_BYTES": "0",
            "SIDECAR_SCHEDULE": "off",
            "SIDECAR_VERIFY_AFTER_BACKUP": "quick",
            "SIDECAR_PITR_SLICE_SECONDS": "0.5",
        }
        process = _serve(root, env)
        _backup(int(port))
        patients = client.maekcord.patients
        patients.insert_many(
            [{"_id": f"new-{n}", "patientId": f"new-{n}", "name": f"p{n}"} for n in range(30)]
        )
        patients.update_many({"_id": {"$in": [f"new-{n}" for n in range(10)]}}, {"$set": {"seen": True}})
        before_delete = newest_ts(client)
        deleted = patients.delete_many({"_id": {"$regex": "^new-"}}).deleted_count
        delete = next(oplog(client).find({"ts": {"$gt": before_delete}, "op": "d"}).sort("$natural", 1))
        patients.insert_many(
            [{"_id": f"after-{n}", "patientId": f"after-{n}"} for n in range(5)]
        )  # good writes after the mistake
        _backup(int(port))  # the second base: the pitr check has a pair
        client.maekcord.visits.insert_one({"after": "second base"})
        wait_until_stored(settings, client)
        env |= {
            # what the docs tell the reader to set
            "API": f"http://127.0.0.1:{port}",
            "TOKEN": ADMIN,
            "OP": f"{delete['ts'].time}:{delete['ts'].inc}",
            "T": f"{before_delete.time}:{before_delete.inc}",
            "URI": target.uri,
            "END_T": str(_first_base(root / "backups")["oplog"]["end"]["t"]),
            "GOOD": _first_base(root / "backups")["fileName"],
        }
        client.close()
        yield Incident(root, env, source, target, deleted)
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        discard(target)
        discard(source)


def _first_base(backups: Path) -> dict:
    entries = json.loads((backups / "backup-info.json").read_text(encoding="utf-8"))
    return next(e for e in entries if e["status"] == "completed" and "oplog" in e)


def run(block: Block, incident: Incident, script: str | None = None) -> subprocess.CompletedProcess:
    """The block as written, in bash with ``-e``: each of its commands must succeed, not only its last."""
    return subprocess.run(
        ["bash", "-e", "-c", script if script is not None else block.script(incident.env)],
        cwd=incident.root,
        env=incident.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_runbook_shell_block_is_marked():
    unmarked = [b.name for b in BLOCKS if b.kind is None]
    assert not unmarked, f"shell blocks of a runbook without a <!-- runbook --> marker: {unmarked}"
    assert {b.kind for b in BLOCKS} <= set(KINDS)
    assert not [b.name for b in BLOCKS if b.kind == "fails-here" and not b.expected_failure]


def test_the_setup_blocks_export_what_the_tests_set():
    exported = {name for b in BLOCKS if b.kind == "setup" for name in b.exports()}
    assert exported == {"API", "TOKEN"}


RUN = [b for b in BLOCKS if b.kind in ("run", "fails-here")]


@pytest.mark.parametrize("block", RUN, ids=[b.name for b in RUN])
def test_runbook_block(block: Block, incident: Incident) -> None:
    done = run(block, incident)
    said = done.stdout + done.stderr
    if block.kind == "fails-here":
        assert done.returncode != 0 and block.expected_failure in said, said
        return
    assert done.returncode == 0, f"{block.name} exited {done.returncode}:\n{block.body}\n{said}"
    assert "Traceback" not in said and "sidecar: error" not in said, said
    assert done.stdout.strip(), f"{block.name} printed nothing"
    for command, text in SAYS.items():
        if re.search(rf"^{re.escape(command)}(\s+#.*)?$", block.body, re.M):
            assert text in done.stdout, f"{block.name}: {command!r} did not say {text!r}:\n{said}"
    if "| wc -l" in block.body.splitlines()[-1]:  # a count that ends the block: of something
        assert int(done.stdout.split()[-1]) > 0, said
    if "--ns-to maekcord.patients_restored" in block.body:  # the bad delete undone beside the live data
        with pymongo.MongoClient(incident.source.uri) as client:
            back = client.maekcord.patients_restored.count_documents({"_id": {"$regex": "^new-"}})
        assert back == incident.deleted == 30


def test_with_the_old_catalog_name_the_stock_tools_block_fails(incident: Incident) -> None:
    """The catalog is ``oplog-slices.jsonl``; the runbook's loop over ``oplog-slices.json`` used to
    succeed on nothing (an empty oplog file, "applied 0 oplog entries"). Now it stops."""
    (jq_block,) = [b for b in RUN if "oplog-slices.jsonl" in b.body and b.doc == "verify-restore.md"]
    old = jq_block.script(incident.env).replace("oplog-slices.jsonl", "oplog-slices.json")
    done = run(jq_block, incident, old)
    assert done.returncode != 0 and "oplog-slices.json" in done.stderr, done.stdout + done.stderr
    assert run(jq_block, incident).returncode == 0


def test_pitr_slices_prints_what_the_sidecars_own_restore_uses(incident: Incident) -> None:
    def slices(*args: str) -> list[str]:
        done = subprocess.run(
            [incident.env["SIDECAR"], "pitr", "slices", *args],
            env=incident.env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    t, i = (int(x) for x in incident.env["T"].split(":"))
    assert slices("--to-time", incident.env["T"], "--oplog-limit") == [f"{t}:{i + 1}"]  # through t:i
    assert slices("--before-op", incident.env["OP"], "--oplog-limit") == [incident.env["OP"]]
    second = datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert slices("--to-time", second, "--oplog-limit") == [f"{t + 1}:0"]  # the whole second
    (base,) = slices("--to-time", incident.env["T"], "--base")
    assert base == str(incident.root / "backups" / incident.env["GOOD"])
    files = slices("--to-time", incident.env["T"])
    assert files and all(Path(f).parent == incident.root / "backups" / "oplog" for f in files)
    refused = subprocess.run(
        [incident.env["SIDECAR"], "pitr", "slices", "--before-op", "1:1"],
        env=incident.env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and refused.stderr.startswith("sidecar: error: cannot restore to 1:1")
