"""The mongodump engine wrapper: arguments, the password kept off the command line, the result recorded.

A stand-in script records how it was called (what the real tool cannot show) and writes a real archive
to its stdout with our writer; the wrapper under test is real. The stock tool itself runs in
test_interop_tools.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import textwrap
import threading
import time

import pyrage
import pytest

from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import STATUS_COMPLETED
from tests.test_interop_tools import NO_TOOLS

FAKE = textwrap.dedent("""\
    #!{python}
    import json, os, stat, sys
    import bson
    from sidecar.archive import ArchiveHeader, ArchiveWriter, CollectionMetadata, Namespace
    from sidecar.codec.gzip_stream import gzip_writer
    args = sys.argv[1:]
    config = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    assert "--archive" in args  # no file name: the archive goes to stdout
    mode = stat.S_IMODE(os.stat(config).st_mode)
    record = {{"argv": sys.argv, "config": open(config).read(), "mode": mode}}
    with open(os.environ["FAKE_RECORD"], "w") as f:
        json.dump(record, f)
    with gzip_writer(sys.stdout.buffer) as gz:
        w = ArchiveWriter(gz)
        ns = Namespace("maekcord", "patients")
        meta = CollectionMetadata("maekcord", "patients", "{{}}")
        w.write_prelude(ArchiveHeader("8.0.4", "100.10.0"), [meta])
        w.write_documents(ns, b"".join(bson.encode({{"i": i}}) for i in range(3)))
        w.end_namespace(ns)
""")


@pytest.fixture
def fake_mongodump(tmp_path, monkeypatch):
    tool = tmp_path / "bin" / "mongodump"
    tool.parent.mkdir()
    tool.write_text(FAKE.format(python=sys.executable))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    return tool, record


def test_mongodump_engine_keeps_the_password_off_the_command_line(make_settings, fake_mongodump, mongo_uri):
    tool, record = fake_mongodump
    host = mongo_uri.split("://", 1)[1].split("/", 1)[0]
    # the wrapper connects first (for the oplog decision), so the URI must reach the real server
    settings = make_settings(
        engine="mongodump", mongodump_path=str(tool), ns_include="maekcord.*", parallel_collections=2
    )
    entry = BackupService(settings).run_backup()
    seen = json.loads(record.read_text())
    assert entry["status"] == STATUS_COMPLETED and entry["engine"] == "mongodump"
    assert entry["namespaces"]["maekcord.patients"]["documents"] == 3
    assert seen["mode"] == 0o600
    assert host in seen["config"]
    argv = seen["argv"][1:]
    assert "--gzip" in argv and "--numParallelCollections=2" in argv and "--db=maekcord" in argv
    assert not any(host in a for a in argv), "the URI belongs in the config file only"
    assert (settings.backup_dir / entry["fileName"]).stat().st_size == entry["sizeBytes"]


def test_password_in_uri_goes_only_to_the_config_file(tmp_path, fake_mongodump):
    from sidecar.engine.dump import DumpOptions
    from sidecar.engine.mongodump import run_mongodump

    tool, record = fake_mongodump
    uri = "mongodb://backup:Very-Secret-9@127.0.0.1:27017/?authSource=admin"
    with open(tmp_path / "out.gz", "wb") as out:
        result = run_mongodump(str(tool), uri, out, DumpOptions(), oplog=True)
    seen = json.loads(record.read_text())
    assert "Very-Secret-9" in seen["config"]
    assert not any("Very-Secret-9" in a for a in seen["argv"])
    assert "--oplog" in seen["argv"]
    assert result.namespaces["maekcord.patients"].documents == 3


def test_missing_mongodump_binary_is_named(make_settings, sample_counts):
    settings = make_settings(
        engine="mongodump", mongodump_path="/nonexistent/mongodump", ns_include="analytics.*"
    )
    with pytest.raises(
        JobFailed, match="SIDECAR_ENGINE=mongodump but '/nonexistent/mongodump' is not on PATH"
    ):
        BackupService(settings).run_backup()


SLOW = textwrap.dedent("""\
    #!{python}
    # A mongodump that hangs (a huge collection, a stalled server): it never finishes by itself.
    import os, sys, time
    with open(os.environ["FAKE_RECORD"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.environ["FAKE_RECORD"] + ".tmp", os.environ["FAKE_RECORD"])  # whole when it appears
    time.sleep(120)
""")


def test_a_cancel_kills_a_running_mongodump_at_once(make_settings, tmp_path, monkeypatch, sample_counts):
    tool = tmp_path / "bin" / "mongodump"
    tool.parent.mkdir()
    tool.write_text(SLOW.format(python=sys.executable))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "pid"
    monkeypatch.setenv("FAKE_RECORD", str(record))
    service = BackupService(make_settings(engine="mongodump", mongodump_path=str(tool), database="maekcord"))
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(outcome, service.run_backup), daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(record.read_text())
    cancelled_at = time.monotonic()
    service.cancel.set()  # what a shutdown does
    worker.join(timeout=10)
    assert not worker.is_alive(), "the backup waited for mongodump instead of killing it"
    assert time.monotonic() - cancelled_at < 5
    assert isinstance(outcome[0], JobFailed)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    entry = service.list_backups()[-1]
    assert entry["status"] == "failed" and not (service.settings.backup_dir / entry["fileName"]).exists()
    assert not list(service.settings.backup_dir.glob(".*partial"))


def _catch(outcome: list[BaseException], call) -> None:
    try:
        call()
    except BaseException as exc:
        outcome.append(exc)


@pytest.mark.skipif(shutil.which("mongodump") is None, reason=NO_TOOLS.format("mongodump"))
def test_an_encrypted_mongodump_backup_never_puts_plaintext_on_disk(make_settings, sample_counts, tmp_path):
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    settings = make_settings(
        engine="mongodump",
        database="maekcord",
        age_recipients=str(identity.to_public()),
        age_identity_file=str(key),
    )
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, bytes] = {}
    done = threading.Event()

    def watch() -> None:  # every file that appears in the backup directory, and how it starts
        while not done.is_set():
            for path in settings.backup_dir.iterdir():
                with contextlib.suppress(OSError):
                    head = path.read_bytes()[:22] if path.suffix != ".json" else b""
                    if len(head) > len(seen.get(path.name, b"")):
                        seen[path.name] = head
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        service = BackupService(settings)
        entry = service.run_backup()
    finally:
        done.set()
        watcher.join()
    assert entry["status"] == STATUS_COMPLETED and entry["fileName"].endswith(".gz.age")
    archives = {name: head for name, head in seen.items() if ".gz" in name}
    assert archives and not [n for n in archives if "plain" in n], sorted(archives)
    assert all(head.startswith(b"age-encryption.org/v1") for head in archives.values() if head), archives
    assert service.run_verify(file_name=entry["fileName"], level="full")["ok"]


def test_the_scope_maps_onto_what_mongodump_can_select():
    from sidecar.engine.dump import DumpError, DumpOptions
    from sidecar.engine.mongodump import mongodump_arguments

    def scope(**values):
        return mongodump_arguments(DumpOptions(parallel_collections=1, **values), oplog=False)[3:]

    assert scope() == []
    assert scope(database="maekcord") == scope(ns_include=("maekcord.*",)) == ["--db=maekcord"]
    assert scope(ns_include=("maekcord.patients",)) == ["--db=maekcord", "--collection=patients"]
    assert scope(ns_include=("maekcord.*",), ns_exclude=("maekcord.audit_log", "maekcord.tmp_*")) == [
        "--db=maekcord",
        "--excludeCollection=audit_log",
        "--excludeCollectionsWithPrefix=tmp_",
    ]
    for values in (
        {"ns_include": ("maekcord.*", "analytics.*")},
        {"ns_include": ("*.patients",)},
        {"ns_include": ("maekcord.pat*",)},
        {"ns_exclude": ("maekcord.audit_log",)},  # an exclusion needs the one database it applies to
        {"ns_include": ("maekcord.*",), "ns_exclude": ("analytics.events",)},
    ):
        with pytest.raises(DumpError, match=r"mongodump cannot express .*use SIDECAR_ENGINE=native"):
            scope(**values)
