"""One "newest usable backup" everywhere (issue 11 item 2), against the real server.

A pre-restore safety copy and an archive whose newest integrity test failed are both in the catalog;
both status endpoints and /metrics name the same regular, untainted backup, and ``sidecar list`` shows
each entry's trigger and newest test. Restores go to ``rt_<random>`` databases; the samples are read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.config import Settings
from sidecar.service import BackupService, JobFailed
from sidecar.store.catalog import CATALOG_NAME, newest_usable
from sidecar.time_input import parse_iso
from tests.test_api import (  # noqa: F401 - fixtures
    ADMIN,
    READ,
    auth,
    backup,
    client,
    sidecar_app,
)
from tests.test_restore_support import scratch_db_fixture  # noqa: F401 - fixture

PATIENTS = "maekcord.patients"


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], sample_counts: dict[str, int]) -> Settings:
    return make_settings(admin_token=ADMIN, read_token=READ, verify_after_backup="off", ns_include=PATIENTS)


def entry(name: str, status: str = "completed", trigger: str = "manual", test: bool | None = None) -> dict:
    made = {"fileName": name, "fileSize": "1B", "createdAt": "2025-01-01T00:00:00.000Z", "status": status}
    made["trigger"] = trigger
    if test is not None:
        made["lastVerification"] = {"level": "full", "ok": test, "at": "2025-01-01T00:01:00.000Z"}
    return made


@pytest.mark.parametrize(
    ("catalog", "expected"),
    [
        ([], None),
        ([entry("a")], "a"),
        ([entry("a"), entry("b", status="failed")], "a"),
        ([entry("a"), entry("b", status="running")], "a"),
        ([entry("a"), entry("s", trigger="pre-restore")], "a"),  # a safety copy is no full backup
        ([entry("a", test=True), entry("b", test=False)], "a"),  # its newest test failed
        ([entry("a", test=False), entry("b")], "b"),  # never tested is usable
        ([entry("a"), entry("b", test=True)], "b"),
        ([entry("s", trigger="pre-restore"), entry("b", test=False)], None),
    ],
)
def test_newest_usable(catalog: list[dict], expected: str | None) -> None:
    found = newest_usable(catalog)
    assert (found["fileName"] if found else None) == expected


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def metric(exposition: str, name: str) -> float:
    (line,) = [line for line in exposition.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


async def test_status_endpoints_and_metrics_name_the_same_backup_after_a_restore_with_a_safety_backup(
    client: TestClient,  # noqa: F811 - the fixture
    sidecar_app: Any,  # noqa: F811
    scratch_db: Callable[[], str],
) -> None:
    target = scratch_db()
    restore = {"nsInclude": [PATIENTS], "nsFrom": ["maekcord.*"], "nsTo": [f"{target}.*"]}
    good = (await backup(client))["backup"]
    first = {"fileName": good["fileName"], **restore}
    resp = await client.post("/api/backup/restore?wait=true", json=first, headers=auth(ADMIN))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["restore"]["safetyBackup"] is None  # nothing there yet

    failed = (await backup(client))["backup"]  # newer, but its integrity test fails
    corrupt(sidecar_app.settings.backup_dir / failed["fileName"])
    test = {"fileName": failed["fileName"], "level": "quick"}
    resp = await client.post("/api/backup/test?wait=true", json=test, headers=auth(ADMIN))
    assert resp.status == 422, await resp.text()

    again = {**first, "drop": True}  # overwrites the first restore: a safety backup first
    resp = await client.post("/api/backup/restore?wait=true", json=again, headers=auth(ADMIN))
    assert resp.status == 200, await resp.text()
    safety = (await resp.json())["restore"]["safetyBackup"]
    assert safety and safety not in (good["fileName"], failed["fileName"])

    status = await (await client.get("/api/backup/status", headers=auth(READ))).json()
    monitoring = await (await client.get("/api/v1/monitoring/status", headers=auth(READ))).json()
    exposition = await (await client.get("/metrics")).text()
    assert status["lastSuccessfulBackup"]["fileName"] == good["fileName"]
    assert monitoring["lastSuccessfulBackup"]["fileName"] == good["fileName"]
    assert metric(exposition, "mongobackup_backup_last_success_timestamp_seconds") == pytest.approx(
        parse_iso(good["finishedAt"]).timestamp()
    )
    assert metric(exposition, "mongobackup_backup_last_size_bytes") == good["sizeBytes"]
    assert status["lastBackup"]["fileName"] == failed["fileName"]  # the newest run, not the safety copy
    # and a test without a file name takes the same one
    resp = await client.post("/api/backup/test?wait=true", json={"level": "quick"}, headers=auth(ADMIN))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["verification"]["fileName"] == good["fileName"]


def run_list(backup_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "SIDECAR_BACKUP_DIR": str(backup_dir),
        "SIDECAR_LOG_DIR": str(backup_dir.parent / "list-logs"),
    }
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "list", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_list_shows_each_entrys_trigger_and_newest_integrity_test(
    make_settings: Callable[..., Settings], scratch_db: Callable[[], str], sample_counts: dict[str, int]
) -> None:
    service = BackupService(make_settings(ns_include=PATIENTS))
    target = scratch_db()
    restore = {"ns_include": (PATIENTS,), "ns_from": ("maekcord.*",), "ns_to": (f"{target}.*",)}
    good = service.run_backup()["fileName"]
    service.run_verify(file_name=good, level="full")
    service.run_restore(file_name=good, **restore)
    failed = service.run_backup()["fileName"]
    corrupt(service.settings.backup_dir / failed)
    with pytest.raises(JobFailed):
        service.run_verify(file_name=failed, level="quick")
    safety = service.run_restore(file_name=good, drop=True, **restore)["safetyBackup"]

    proc = run_list(service.settings.backup_dir)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[-1]: line.split()[1:-1] for line in proc.stdout.splitlines()}
    assert rows[good][2:] == ["manual", "full", "passed"]
    assert rows[failed][2:] == ["manual", "quick", "FAILED"]
    assert rows[safety][2:] == ["pre-restore", "untested"]
    assert all(row[0] == "completed" for row in rows.values())

    listed = run_list(service.settings.backup_dir, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == service.list_backups()  # the catalog, as it is


def test_list_without_a_catalog_says_where_it_looked(tmp_path: Path) -> None:
    where = tmp_path / "elsewhere"
    for args in ((), ("--json",)):
        proc = run_list(where, *args)
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"sidecar: error: no catalog at {where / CATALOG_NAME}: ")
