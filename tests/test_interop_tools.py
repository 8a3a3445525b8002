"""The stock MongoDB Database Tools: our archives restore with mongorestore, mongodump's verify and
restore with ours (skipped, saying so, where the tools are not installed); and the mongorestore
wrapper itself, tested with a fake ``mongorestore`` that records how it was called."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pyrage
import pytest

from sidecar.engine.mongorestore import mongorestore_arguments, run_mongorestore
from sidecar.engine.restore_errors import RestoreError
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.engine.tools import write_tool_config
from sidecar.integrity.compare import index_signature
from sidecar.service import BackupService, JobFailed
from tests.helpers import settings_for
from tests.test_restore_support import (  # noqa: F401 - fixtures
    SAMPLE_DBS,
    SAMPLE_NS,
    database_exists,
    raw_documents,
    sample_archive_fixture,
    scratch_db_fixture,
)

MONGORESTORE = shutil.which("mongorestore")
MONGODUMP = shutil.which("mongodump")
NO_TOOLS = (
    "{} is not on PATH (the MongoDB Database Tools are in neither Debian nor PyPI; `bash deploy/local.sh "
    "test` adds ../shared/tools/mongodb-database-tools/bin where it exists)"
)

FAKE = """\
#!{python}
# A stand-in for mongorestore: records its arguments and --config file, then answers like the tool.
import json, os, sys
record = {{"argv": sys.argv[1:], "config": None, "mode": None}}
for arg in sys.argv[1:]:
    if arg.startswith("--config="):
        path = arg.split("=", 1)[1]
        record["config"] = open(path).read()
        record["mode"] = oct(os.stat(path).st_mode & 0o777)
        record["config_path"] = path
with open(os.environ["FAKE_TOOL_RECORD"], "w") as out:
    json.dump(record, out)
code = int(os.environ.get("FAKE_TOOL_EXIT", "0"))
if code:
    print("2026-01-01T00:00:00.000+0000\\tFailed: error connecting to db server: no reachable servers",
          file=sys.stderr)
else:
    print("2026-01-01T00:00:00.000+0000\\t767 document(s) restored successfully. "
          "0 document(s) failed to restore.", file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def fake_mongorestore(tmp_path, monkeypatch) -> tuple[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mongorestore"
    tool.write_text(FAKE.format(python=sys.executable))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_TOOL_RECORD", str(record))
    return str(tool), record


def test_every_option_maps_onto_mongorestore():
    options = RestoreOptions(
        ns_include=("maekcord.patients", "maekcord.appointments"),
        ns_exclude=("maekcord.audit_log",),
        ns_from=("maekcord.*", "analytics.*"),
        ns_to=("copy.*", "stats.*"),
        drop=True,
        dry_run=True,
    )
    args = mongorestore_arguments(options, oplog_replay=True)
    assert args == [
        "--archive",  # the verified archive comes on stdin, uncompressed
        "--nsInclude=maekcord.patients",
        "--nsInclude=maekcord.appointments",
        "--nsExclude=maekcord.audit_log",
        "--nsFrom=maekcord.*",
        "--nsTo=copy.*",
        "--nsFrom=analytics.*",
        "--nsTo=stats.*",
        "--drop",
        "--dryRun",
        "--oplogReplay",
    ]


def test_the_password_is_only_in_a_0600_config_file(fake_mongorestore, tmp_path):
    tool, record = fake_mongorestore
    uri = "mongodb://backup:S3cr3t-pw@127.0.0.1:27017/?authSource=admin"
    result = run_mongorestore(
        tool, uri, io.BytesIO(b"archive bytes"), RestoreOptions(drop=True), oplog_replay=False
    )
    seen = json.loads(record.read_text())
    assert not any("S3cr3t" in arg for arg in seen["argv"])
    assert seen["mode"] == "0o600"
    assert "S3cr3t-pw" in seen["config"] and "uri:" in seen["config"]
    assert not Path(seen["config_path"]).exists()  # removed after the run
    assert seen["argv"][1:] == ["--archive", "--drop"]  # the archive comes on stdin
    assert (result.restored, result.failed) == (767, 0)


def test_a_failing_mongorestore_is_one_line(fake_mongorestore, tmp_path, monkeypatch):
    tool, _ = fake_mongorestore
    monkeypatch.setenv("FAKE_TOOL_EXIT", "1")
    with pytest.raises(RestoreError, match=r"^mongorestore failed: .*Failed: error connecting to db server"):
        run_mongorestore(tool, "mongodb://h", io.BytesIO(b""), RestoreOptions(), oplog_replay=False)


def test_the_service_verifies_then_runs_the_tool_with_the_same_options(
    fake_mongorestore, sample_archive, scratch_db, mongo_client, tmp_path, mongo_uri
):
    tool, record = fake_mongorestore
    service, path = sample_archive.copy_into(tmp_path, mongo_uri, engine="mongodump", mongorestore_path=tool)
    target = scratch_db()
    options = {"ns_include": ("maekcord.patients",), "ns_from": "maekcord.*", "ns_to": f"{target}.*"}
    dry = service.run_restore(file_name=path.name, drop=True, dry_run=True, **options)
    assert dry["engine"] == "mongorestore" and dry["verified"]["documents"] > 0
    assert dry["mongorestore"]["restored"] == 767
    argv = json.loads(record.read_text())["argv"]
    assert argv[1:] == [
        "--archive",
        "--nsInclude=maekcord.patients",
        "--nsFrom=maekcord.*",
        f"--nsTo={target}.*",
        "--drop",
        "--dryRun",
    ]
    # The fake restores nothing: the post-restore count check is what catches that.
    with pytest.raises(
        JobFailed, match=rf"document counts differ from the archive: {target}\.patients: expected 500"
    ):
        service.run_restore(file_name=path.name, **options)
    assert "--dryRun" not in json.loads(record.read_text())["argv"]


def test_a_missing_mongorestore_is_named(sample_archive, tmp_path, mongo_uri):
    service, path = sample_archive.copy_into(tmp_path, mongo_uri, mongorestore_path="no-such-mongorestore")
    with pytest.raises(JobFailed, match="'no-such-mongorestore' is not on PATH"):
        service.run_restore(file_name=path.name, engine="mongorestore", dry_run=True)


# -- the stock tools themselves --------------------------------------------------------------------


def stock(tool: str, uri: str, *args: str, stdin=None) -> str:
    """Run a stock tool as an operator would (the URI in a --config file); its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        config = write_tool_config(tmp, uri)
        done = subprocess.run(
            [tool, f"--config={config}", *args], input=stdin, capture_output=True, timeout=300
        )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stderr.decode()


def collection_facts(client, db: str) -> dict[str, dict]:
    """What a restore must reproduce, by collection: options, indexes, documents (raw, sorted)."""
    facts = {}
    for info in client[db].list_collections():
        name = info["name"]
        if name.startswith("system."):
            continue
        fact = {"type": info.get("type"), "options": dict(info.get("options", {}))}
        if info.get("type") != "view":
            fact["indexes"] = sorted(
                (str(ix["name"]), index_signature(ix)) for ix in client[db][name].list_indexes()
            )
            fact["documents"] = sorted(raw_documents(client, f"{db}.{name}"))
        facts[name] = fact
    return facts


def assert_same_databases(client, targets: dict[str, str]) -> None:
    """Each source database and its restored copy: the same collections, options, indexes, views and
    byte-identical documents."""
    for source, target in targets.items():
        want, got = collection_facts(client, source), collection_facts(client, target)
        assert sorted(got) == sorted(want), (source, target)
        for name in want:
            assert got[name] == want[name], f"{source}.{name}"


def renames(targets: dict[str, str]) -> dict[str, tuple[str, ...]]:
    return {"ns_from": tuple(f"{db}.*" for db in targets), "ns_to": tuple(f"{t}.*" for t in targets.values())}


def rename_args(targets: dict[str, str]) -> list[str]:
    return [arg for db, t in targets.items() for arg in (f"--nsFrom={db}.*", f"--nsTo={t}.*")]


@pytest.mark.skipif(MONGORESTORE is None, reason=NO_TOOLS.format("mongorestore"))
def test_our_archive_restores_with_the_stock_mongorestore(
    sample_archive, scratch_db, mongo_client, mongo_uri
):
    targets = {db: scratch_db() for db in SAMPLE_DBS}
    archive = f"--archive={sample_archive.path}"
    stock(MONGORESTORE, mongo_uri, archive, "--gzip", "--drop", *rename_args(targets))
    assert_same_databases(mongo_client, targets)
    # the runbook's line for one collection: --nsInclude with --nsFrom/--nsTo
    one = {"maekcord": scratch_db()}
    stock(
        MONGORESTORE,
        mongo_uri,
        archive,
        "--gzip",
        "--drop",
        "--nsInclude=maekcord.patients",
        *rename_args(one),
    )
    assert mongo_client[one["maekcord"]].list_collection_names() == ["patients"]
    assert sorted(raw_documents(mongo_client, f"{one['maekcord']}.patients")) == sorted(
        raw_documents(mongo_client, "maekcord.patients")
    )


@pytest.mark.skipif(
    MONGORESTORE is None or shutil.which("age") is None, reason=NO_TOOLS.format("mongorestore or age")
)
def test_our_encrypted_archive_restores_with_age_and_the_stock_mongorestore(
    make_settings, sample_counts, scratch_db, mongo_client, mongo_uri, tmp_path
):
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    settings = make_settings(age_recipients=str(identity.to_public()), database="maekcord")
    entry = BackupService(settings).run_backup()
    plain = subprocess.run(
        ["age", "-d", "-i", str(key), str(settings.backup_dir / entry["fileName"])],
        capture_output=True,
        check=True,
    ).stdout
    targets = {"maekcord": scratch_db()}
    stock(MONGORESTORE, mongo_uri, "--archive", "--gzip", "--drop", *rename_args(targets), stdin=plain)
    assert_same_databases(mongo_client, targets)


@pytest.mark.skipif(MONGODUMP is None, reason=NO_TOOLS.format("mongodump"))
@pytest.mark.parametrize("oplog", [False, True], ids=["plain", "oplog"])
def test_a_mongodump_archive_verifies_and_restores_with_ours(
    oplog, sample_counts, scratch_db, mongo_client, tmp_path, mongo_uri
):
    archive = tmp_path / "from-mongodump.gz"
    stock(MONGODUMP, mongo_uri, f"--archive={archive}", "--gzip", *(["--oplog"] if oplog else []))
    service = BackupService(settings_for(mongo_uri, tmp_path))
    result = service.run_verify(file_name=str(archive), level="full")
    assert result["ok"], result["reason"]
    full = result["verification"]["full"]
    assert (
        full["documents"] >= sum(sample_counts.values()) and (full.get("oplogEntries") is not None) == oplog
    )
    targets = {db: scratch_db() for db in SAMPLE_DBS}
    restored = service.run_restore(
        file_name=str(archive),
        ns_include=tuple(f"{db}.*" for db in SAMPLE_DBS),
        safety_backup=False,
        **renames(targets),
    )
    assert restored["postRestoreCheck"]["ok"] is True
    assert_same_databases(mongo_client, targets)


@pytest.mark.skipif(
    MONGODUMP is None or MONGORESTORE is None, reason=NO_TOOLS.format("mongodump or mongorestore")
)
def test_the_mongodump_engine_backs_up_and_the_mongorestore_engine_restores(
    make_settings, sample_counts, scratch_db, mongo_client
):
    settings = make_settings(engine="mongodump", ns_include="maekcord.*")
    service = BackupService(settings)
    entry = service.run_backup()
    assert entry["engine"] == "mongodump" and entry["namespaces"]["maekcord.patients"]["documents"] > 0
    assert service.run_verify(file_name=entry["fileName"], level="full")["ok"]
    targets = {"maekcord": scratch_db()}
    restored = service.run_restore(file_name=entry["fileName"], engine="mongorestore", **renames(targets))
    assert restored["engine"] == "mongorestore" and restored["postRestoreCheck"]["ok"] is True
    assert_same_databases(mongo_client, targets)
    # again over the restored copy: the safety backup of every namespace it overwrites comes first
    again = service.run_restore(
        file_name=entry["fileName"], engine="mongorestore", drop=True, **renames(targets)
    )
    safety = service.catalog.get(again["safetyBackup"])
    assert safety["trigger"] == "pre-restore" and safety["engine"] == "native"  # exact namespaces: native
    assert set(safety["namespaces"]) == {ns for ns in again["overwrites"]}
    assert_same_databases(mongo_client, targets)
