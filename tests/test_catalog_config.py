"""Catalog persistence and reconciliation; configuration errors that name the setting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sidecar.config import ConfigError, check_backup_dir, load_settings, redact_uri
from sidecar.store.catalog import Catalog, CatalogError
from sidecar.text import human_size


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0B"), (1023, "1023B"), (15_938_355, "15.2MB"), (3 << 30, "3.0GB")]
)
def test_human_size_matches_the_runbook_style(size, text):
    assert human_size(size) == text


def test_catalog_writes_atomically_and_refuses_a_corrupt_file(tmp_path):
    catalog = Catalog(tmp_path)
    catalog.add({"fileName": "a.gz", "status": "completed", "createdAt": "2025-01-01T00:00:00.000Z"})
    assert json.loads((tmp_path / "backup-info.json").read_text())[0]["fileName"] == "a.gz"
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "backup-info.json").write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        catalog.load()


def test_reconcile_reports_missing_stray_and_partial_files(tmp_path):
    catalog = Catalog(tmp_path)
    catalog.add({"fileName": "p-2025-01-01T00-00-00.gz", "status": "completed", "createdAt": "x"})
    catalog.add({"fileName": "p-2025-01-04T00-00-00.gz", "status": "completed", "locations": ["local", "s3"]})
    # only in the bucket now (tiered retention removed the local copy): its absence here is no loss
    catalog.add({"fileName": "p-2025-01-05T00-00-00.gz", "status": "completed", "locations": ["s3"]})
    catalog.add({"fileName": "p-2025-01-06T00-00-00.gz", "status": "failed"})  # never had a file
    (tmp_path / "p-2025-01-02T00-00-00.gz").write_bytes(b"stray")
    (tmp_path / ".p-2025-01-03T00-00-00.gz.partial").write_bytes(b"half")
    report = catalog.reconcile("p")
    assert report.as_json() == {  # as GET /api/v1/monitoring/status gives it
        "missing": ["p-2025-01-01T00-00-00.gz", "p-2025-01-04T00-00-00.gz"],
        "stray": ["p-2025-01-02T00-00-00.gz"],
        "partial": [".p-2025-01-03T00-00-00.gz.partial"],
    }
    assert not report.clean
    assert (tmp_path / "p-2025-01-02T00-00-00.gz").exists(), "reconciliation reports, it never deletes"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SIDECAR_PORT": "70000"}, "SIDECAR_PORT: must be between 1 and 65535"),
        ({"SIDECAR_SCHEDULE": "every day"}, "SIDECAR_SCHEDULE: must be a 5-field cron expression"),
        ({"SIDECAR_TIMEZONE": "Seoul"}, "SIDECAR_TIMEZONE: unknown time zone 'Seoul'"),
        ({"SIDECAR_ADMIN_TOKEN": "short"}, "SIDECAR_ADMIN_TOKEN: must be at least 16 characters"),
        ({"SIDECAR_COMPRESSION_LEVEL": "6"}, "SIDECAR_COMPRESSION_LEVEL: isal takes 0..3"),
        (
            {"SIDECAR_NS_INCLUDE": "bad pattern"},
            "SIDECAR_NS_INCLUDE: 'bad pattern' is not a namespace pattern",
        ),
        ({"SIDECAR_RETENTON_DAYS": "3"}, "did you mean SIDECAR_RETENTION_DAYS"),
        (
            {"SIDECAR_ALERT_SIZE_DROP_RATIO": "2"},
            "SIDECAR_ALERT_SIZE_DROP_RATIO: must be between 0.0 and 1.0",
        ),
        ({"SIDECAR_MONGODB_URI": "http://x"}, "SIDECAR_MONGODB_URI: must start with mongodb://"),
        ({"SIDECAR_PITR_REPLAY_WRITERS": "17"}, "SIDECAR_PITR_REPLAY_WRITERS: must be between 0 and 16"),
    ],
)
def test_bad_settings_are_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_settings(env)


def test_defaults_follow_the_runbook():
    s = load_settings({})
    assert (s.schedule, s.timezone, s.retention_days, s.file_prefix, s.port) == (
        "0 2 * * *",
        "Asia/Seoul",
        30,
        "maekcord-backup",
        5000,
    )


def test_secret_files_and_redaction(tmp_path):
    (tmp_path / "uri").write_text("mongodb://backup:p%40ss-word@db:27017/?authSource=admin\n")
    s = load_settings({"SIDECAR_MONGODB_URI_FILE": str(tmp_path / "uri")})
    assert s.redacted_uri == "mongodb://backup:***@db:27017/?authSource=admin"
    assert "p%40ss-word" not in json.dumps(s.public_view())
    assert redact_uri("mongodb://db:27017") == "mongodb://db:27017"


def test_repr_and_str_hide_the_secrets():
    """D8: a Settings in a traceback, a debugger or an f-string must not carry passwords or tokens."""
    s = load_settings(
        {
            "SIDECAR_MONGODB_URI": "mongodb://backup:main-pa55word@db:27017/admin",
            "SIDECAR_DRILL_MONGODB_URI": "mongodb://drill:drill-pa55word@scratch:27017/admin",
            "SIDECAR_ADMIN_TOKEN": "admin-token-0123456789",
            "SIDECAR_READ_TOKEN": "read-token-0123456789",
        }
    )
    for text in (repr(s), str(s), f"{s}"):
        for secret in ("main-pa55word", "drill-pa55word", "admin-token-0123456789", "read-token-0123456789"):
            assert secret not in text
    assert "retention_days=30" in repr(s) and s.admin_token == "admin-token-0123456789"


def test_config_file_keys_and_env_precedence(tmp_path):
    (tmp_path / "sidecar.yaml").write_text("SIDECAR_RETENTION_DAYS: 14\nSIDECAR_PORT: 6000\n")
    s = load_settings({"SIDECAR_CONFIG_FILE": str(tmp_path / "sidecar.yaml"), "SIDECAR_PORT": "7000"})
    assert (s.retention_days, s.port) == (14, 7000)


def test_unwritable_backup_dir_says_how_to_fix():
    """Run as an unprivileged user (root could write anywhere) against a root-owned directory."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the check as another user")
    locked = Path(tempfile.mkdtemp(prefix="sidecar-locked-", dir="/tmp"))
    try:
        locked.chmod(0o755)
        env = {
            "PATH": os.environ["PATH"],
            "SIDECAR_BACKUP_DIR": str(locked),
            "SIDECAR_MIN_FREE_BYTES": "0",
            "SIDECAR_MONGODB_URI": "mongodb://127.0.0.1:9",
        }
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-m",
                "sidecar",
                "backup",
                "--quiet",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert proc.returncode == 1, proc.stderr
        assert f"SIDECAR_BACKUP_DIR: {locked} is not writable by uid 65534" in proc.stderr
        assert f"chown -R 65534:65534 {locked}" in proc.stderr
    finally:
        shutil.rmtree(locked)


def test_backup_dir_that_is_a_file_or_too_full(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"is not a directory|cannot create"):
        check_backup_dir(load_settings({"SIDECAR_BACKUP_DIR": str(tmp_path / "file")}))
    with pytest.raises(ConfigError, match="SIDECAR_MIN_FREE_BYTES"):
        check_backup_dir(
            load_settings({"SIDECAR_BACKUP_DIR": str(tmp_path), "SIDECAR_MIN_FREE_BYTES": str(1 << 60)})
        )


def test_list_warns_where_directory_and_catalog_disagree(tmp_path):
    catalog = Catalog(tmp_path)
    catalog.add(
        {
            "fileName": "maekcord-backup-2025-01-01T00-00-00.gz",
            "fileSize": "1.0KB",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "status": "completed",
        }
    )
    (tmp_path / "maekcord-backup-2025-01-02T00-00-00.gz").write_bytes(b"stray")
    env = {
        "PATH": os.environ["PATH"],
        "SIDECAR_BACKUP_DIR": str(tmp_path),
        "SIDECAR_LOG_DIR": str(tmp_path / "l"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "maekcord-backup-2025-01-01T00-00-00.gz" in proc.stdout
    assert proc.stderr.splitlines() == [
        "warning: maekcord-backup-2025-01-01T00-00-00.gz is completed in the catalog but missing from the "
        "directory",
        "warning: maekcord-backup-2025-01-02T00-00-00.gz is in the directory but not in the catalog",
    ]
    assert (tmp_path / "maekcord-backup-2025-01-02T00-00-00.gz").exists()
