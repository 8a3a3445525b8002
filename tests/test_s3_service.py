"""Off-site copies through the one backup path, against real SeaweedFS and a real MongoDB-wire server.

Upload and catalog records, streaming with encryption, reading back from the bucket after the local
file is gone, tiered retention across the disk and the bucket, an upload cut off by the store going
away (and the next run recovering), reconciliation with the bucket listing, and the errors operators
see for wrong credentials and a missing bucket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import pyrage
import pytest

from sidecar import clock
from sidecar.archive import ArchiveReader, NamespaceEnd
from sidecar.integrity.levels import verify_archive
from sidecar.integrity.proof_server import given_server
from sidecar.service import BackupService, JobFailed
from sidecar.store.offsite import Offsite
from sidecar.store.retention import Policy, keep_reasons
from sidecar.store.s3 import S3Backend
from sidecar.store.source import ArchiveReadError, BucketSource, source_for
from sidecar.text import iso_utc
from tests import s3_fixture
from tests.s3_fixture import SeaweedS3

seaweed, s3_env = s3_fixture.seaweed, s3_fixture.s3_env  # the fixtures, for pytest to find
PREFIX = "hospital-a/"
TIERS_NOW = dt.datetime(2026, 12, 9, 12, 0, tzinfo=dt.UTC)  # a Wednesday


@pytest.fixture
def s3_settings(make_settings, s3_env, sample_counts):
    """Settings for a small backup (one database) copied to the session's bucket."""

    def make(**values):
        options = {
            "s3_endpoint": s3_env.endpoint,
            "s3_bucket": s3_env.bucket,
            "s3_prefix": PREFIX,
            "database": "maekcord",
        }
        options.update(values)
        return make_settings(**options)

    return make


def object_bytes(server: SeaweedS3, key: str) -> bytes:
    return server.client().get_object(Bucket=server.bucket, Key=key)["Body"].read()


def counts_of(stream) -> dict[str, int]:
    reader = ArchiveReader(stream)
    reader.read_prelude()
    return {str(e.namespace): e.documents for e in reader.events() if isinstance(e, NamespaceEnd)}


def manifest(entry) -> dict[str, int]:
    return {ns: v["documents"] for ns, v in entry["namespaces"].items()}


def test_backup_is_uploaded_checked_and_recorded(s3_settings, s3_env):
    settings = s3_settings()
    service = BackupService(settings)
    job = service.new_job("backup")
    with clock.set_to(TIERS_NOW):
        entry = service.run_backup(job)
    name = entry["fileName"]
    assert entry["locations"] == ["local", "s3"]
    remote = entry["remote"]["s3"]
    assert remote["key"] == PREFIX + name and remote["bucket"] == s3_env.bucket
    assert remote["sizeBytes"] == entry["sizeBytes"] and remote["sha256"] == entry["sha256"]
    assert remote["etag"] and remote["uploadedAt"] >= entry["finishedAt"]
    assert "uploadErrors" not in entry
    assert s3_env.keys() == [PREFIX + name]
    assert hashlib.sha256(object_bytes(s3_env, PREFIX + name)).hexdigest() == entry["sha256"]
    head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=PREFIX + name)
    assert head["Metadata"].get("sha256") == entry["sha256"]  # after-write mode knows it up front
    upload = job.result["uploads"]["s3"]
    assert upload["ok"] is True and upload["bytes"] == entry["sizeBytes"] and upload["files"] == [name]
    assert upload["retried"] == [] and upload["reconcile"] == {"missing": [], "stray": []}
    assert isinstance(upload["at"], float)
    assert job.state == "succeeded" and job.stage == "upload"


def test_streaming_encrypted_copy_is_read_back_from_the_bucket_after_the_local_file_is_gone(
    s3_settings, s3_env, tmp_path
):
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    settings = s3_settings(
        s3_upload_mode="streaming", age_recipients=str(identity.to_public()), age_identity_file=str(key_file)
    )
    entry = BackupService(settings).run_backup()
    name = entry["fileName"]
    assert name.endswith(".gz.age") and entry["locations"] == ["local", "s3"]
    local = (settings.backup_dir / name).read_bytes()
    assert object_bytes(s3_env, PREFIX + name) == local  # one stream, two identical copies
    assert entry["remote"]["s3"]["sha256"] == entry["sha256"]
    (settings.backup_dir / name).unlink()
    source = source_for(settings, settings.backup_dir / name, entry)
    with source.open() as opened:
        assert source.location == "s3" and opened.encrypted
        assert counts_of(opened.data) == manifest(entry)
        assert opened.finish().hexdigest() == entry["sha256"]


def test_restore_source_falls_back_to_the_bucket_and_checks_its_sha256(s3_settings, s3_env):
    settings = s3_settings()
    entry = BackupService(settings).run_backup()
    name = entry["fileName"]
    (settings.backup_dir / name).unlink()
    with source_for(settings, settings.backup_dir / name, entry).open() as opened:
        assert counts_of(opened.data) == manifest(entry)
    # a damaged object is caught by the recorded checksum, not trusted
    data = bytearray(object_bytes(s3_env, PREFIX + name))
    data[len(data) // 2] ^= 0xFF
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=PREFIX + name, Body=bytes(data))
    service = BackupService(settings)
    with pytest.raises(JobFailed, match=r"quick verification of .* failed: the compressed data is damaged"):
        service.run_verify(file_name=name, level="quick")
    # no copy anywhere: the error says where it looked
    s3_env.client().delete_object(Bucket=s3_env.bucket, Key=PREFIX + name)
    with pytest.raises(ArchiveReadError, match=rf"object {PREFIX}{name} is not in bucket"):
        source_for(settings, settings.backup_dir / name, entry).open_stored()


def test_tiered_retention_across_disk_and_bucket(s3_settings, s3_env, monkeypatch, capsys):
    """90 days of history in both places: the disk keeps 3 days, the bucket weeks and months. The
    history is dated back from a set clock (a Wednesday); the bucket's signer keeps the real time."""
    settings = s3_settings(
        retention_days=3,
        retention_min_count=2,
        s3_retention_keep_weekly=4,
        s3_retention_keep_monthly=3,
        timezone="UTC",
    )
    service = BackupService(settings)
    settings.backup_dir.mkdir(parents=True, exist_ok=True)
    s3 = S3Backend.from_settings(settings)
    times = [TIERS_NOW - dt.timedelta(hours=1, days=days_ago) for days_ago in range(90, 0, -1)]
    names = [f"{settings.file_prefix}-{at:%Y-%m-%dT%H-%M-%S}.gz" for at in times]
    on_disk = {names[-1]: "one of the newest 2", names[-2]: "one of the newest 2"}  # 12-08, 12-07
    # the archive whose upload failed back then: the newest of October, which the monthly tier wants
    pending = f"{settings.file_prefix}-2026-10-31T11-00-00.gz"
    in_bucket = {  # what the bucket holds, without the pending one: October's newest there is the 30th
        **on_disk,
        f"{settings.file_prefix}-2026-12-06T11-00-00.gz": "weekly tier (2026-W49)",
        f"{settings.file_prefix}-2026-11-29T11-00-00.gz": "weekly tier (2026-W48)",
        f"{settings.file_prefix}-2026-11-22T11-00-00.gz": "weekly tier (2026-W47)",
        f"{settings.file_prefix}-2026-11-30T11-00-00.gz": "monthly tier (2026-11)",
        f"{settings.file_prefix}-2026-10-30T11-00-00.gz": "monthly tier (2026-10)",
    }
    assert pending in names and set(in_bucket) <= set(names)
    history = []
    for name, at in zip(names, times, strict=True):
        data = f"archive {name}".encode()
        (settings.backup_dir / name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        where = ["local", "s3"]
        entry = {
            "fileName": name,
            "fileSize": f"{len(data)}B",
            "createdAt": iso_utc(at),
            "status": "completed",
        }
        entry.update(sizeBytes=len(data), sha256=sha)
        if name == pending:
            where = ["local"]
        else:
            info = s3.put_file(name, settings.backup_dir / name, expected_sha256=sha)
            entry["remote"] = {"s3": {"key": info.key, "sizeBytes": info.size, "sha256": sha}}
        entry["locations"] = where
        service.catalog.add(entry)
        history.append(entry)
    bucket_policy = Policy(days=3, keep_last=2, weekly=4, monthly=3)
    uploaded = [e for e in history if e["fileName"] != pending]
    assert keep_reasons(uploaded, TIERS_NOW, bucket_policy) == in_bucket
    assert keep_reasons(history, TIERS_NOW, bucket_policy)[pending] == "monthly tier (2026-10)"
    assert keep_reasons(history, TIERS_NOW, Policy(days=3, keep_last=2)) == on_disk
    failed = {"fileName": "f.gz", "createdAt": iso_utc(TIERS_NOW - dt.timedelta(days=50)), "status": "failed"}
    service.catalog.add(failed)
    before = (sorted(p.name for p in settings.backup_dir.glob("*.gz")), s3_env.keys())

    for name, value in {"SIDECAR_" + k.upper(): str(v) for k, v in _env_of(settings).items()}.items():
        monkeypatch.setenv(name, value)
    from sidecar.cli import main

    with clock.set_to(TIERS_NOW):
        assert main(["prune", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "(s3): older than 3 days" in printed and "(local): older than 3 days" in printed
    assert (sorted(p.name for p in settings.backup_dir.glob("*.gz")), s3_env.keys()) == before

    job = service.new_job("prune")
    with clock.set_to(TIERS_NOW):
        removed = service.run_prune(job)
    assert sorted(p.name for p in settings.backup_dir.glob("*.gz")) == sorted({*on_disk, pending})
    assert s3_env.keys() == sorted(PREFIX + n for n in in_bucket)
    catalog = {e["fileName"]: e for e in service.list_backups()}
    assert "f.gz" not in catalog  # the failed entry is gone
    assert set(catalog) == {*on_disk, *in_bucket, pending}
    for name, entry in catalog.items():
        expected = [
            d
            for d, held in (("local", name in on_disk or name == pending), ("s3", name in in_bucket))
            if held
        ]
        assert entry["locations"] == expected, name
        assert ("s3" in entry.get("remote", {})) == ("s3" in expected)
    by_place = {
        d: {r["file_name"] for r in job.result["removed"] if r["destination"] == d} for d in ("local", "s3")
    }
    assert by_place["s3"] == {e["fileName"] for e in history} - set(in_bucket) - {pending}
    assert "f.gz" in by_place["local"]
    assert len(removed) == len(job.result["removed"]) == len(by_place["local"]) + len(by_place["s3"])
    # the next backup uploads the pending archive the bucket wants
    job = service.new_job("backup")
    with clock.set_to(TIERS_NOW):
        entry = service.run_backup(job)
    assert job.result["uploads"]["s3"]["retried"] == [pending]
    assert PREFIX + pending in s3_env.keys(PREFIX)
    # uploaded, it no longer needs the disk: the same run's retention let the local copy go
    assert service.catalog.get(pending)["locations"] == ["s3"]
    assert not (settings.backup_dir / pending).exists()
    assert {"file_name": pending, "destination": "local"}.items() <= next(
        r for r in job.result["removed"] if r["file_name"] == pending
    ).items()
    assert entry["locations"] == ["local", "s3"]


def _env_of(settings) -> dict[str, object]:
    from sidecar.config import SETTINGS

    values = {}
    for spec in SETTINGS:
        value = getattr(settings, spec.attr)
        if value is None or spec.attr in ("admin_token", "read_token"):
            continue
        values[spec.attr] = ",".join(value) if isinstance(value, tuple) else value
    return values


def test_an_upload_cut_off_by_the_store_stopping_is_not_trusted_and_the_next_run_recovers(
    make_settings, sample_counts, tmp_path, monkeypatch
):
    server = SeaweedS3(tmp_path / "own-seaweed").start()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        settings = make_settings(
            s3_endpoint=server.endpoint, s3_bucket=server.bucket, s3_prefix=PREFIX, database="maekcord"
        )
        service = BackupService(settings)
        client = service.offsite.s3.client
        real_upload_part = client.upload_part

        def store_dies_mid_upload(**kwargs):
            server.kill()
            return real_upload_part(**kwargs)

        monkeypatch.setattr(client, "upload_part", store_dies_mid_upload)
        first_job = service.new_job("backup")
        with pytest.raises(JobFailed) as caught:
            service.run_backup(first_job)
        message = str(caught.value)
        assert caught.value.stage == "upload" and first_job.stage == "upload"
        assert server.endpoint in message and server.bucket in message and "retried on the next" in message
        first = service.list_backups()[-1]
        assert first["status"] == "completed" and first["locations"] == ["local"]
        assert "remote" not in first and first["uploadErrors"]["s3"]["attempts"] == 1
        assert (settings.backup_dir / first["fileName"]).is_file()
        assert first_job.result["uploads"]["s3"]["ok"] is False

        monkeypatch.setattr(client, "upload_part", real_upload_part)
        server.start()
        assert server.keys() == []  # no half object
        assert server.open_uploads() == [PREFIX + first["fileName"]]  # the abort could not reach the store

        job = service.new_job("backup")
        second = service.run_backup(job)
        assert server.open_uploads() == []  # recovery aborted the leftover
        assert job.result["uploads"]["s3"]["retried"] == [first["fileName"]]
        assert server.keys() == sorted(PREFIX + e["fileName"] for e in (first, second))
        recovered = service.catalog.get(first["fileName"])
        assert recovered["locations"] == ["local", "s3"] and "uploadErrors" not in recovered
        assert recovered["remote"]["s3"]["sha256"] == recovered["sha256"]
    finally:
        server.stop()


def reconcile_now(offsite: Offsite) -> dict[str, list[str]]:
    """The catalog against the bucket's listing now, as a backup's upload stage compares them."""
    return offsite.reconcile(offsite.catalog.load(), {o.name: o for o in offsite.s3.list()})


def test_reconciliation_reports_strays_and_uploads_missing_objects_again(s3_settings, s3_env):
    settings = s3_settings()
    service = BackupService(settings)
    first = service.run_backup()
    stray = f"{settings.file_prefix}-2020-01-01T00-00-00.gz"
    client = s3_env.client()
    client.put_object(Bucket=s3_env.bucket, Key=PREFIX + stray, Body=b"not ours")
    client.put_object(Bucket=s3_env.bucket, Key=PREFIX + "other-2020-01-01T00-00-00.gz", Body=b"x")
    client.delete_object(Bucket=s3_env.bucket, Key=PREFIX + first["fileName"])
    assert reconcile_now(service.offsite) == {"missing": [first["fileName"]], "stray": [stray]}
    job = service.new_job("backup")
    started = time.time()
    second = service.run_backup(job)
    upload = job.result["uploads"]["s3"]
    assert set(upload) == {"ok", "bytes", "at", "files", "retried", "reconcile"}
    assert started <= upload["at"] <= time.time()  # when the upload stage ended
    assert upload["reconcile"] == {"missing": [first["fileName"]], "stray": [stray]}
    # the new archive goes up first, then the ones the bucket lost
    assert upload["files"] == [second["fileName"], first["fileName"]]
    assert upload["retried"] == [first["fileName"]]
    assert reconcile_now(service.offsite) == {"missing": [], "stray": [stray]}


def test_an_archive_the_bucket_wants_but_whose_local_file_is_gone_is_named(s3_settings, s3_env):
    settings = s3_settings()
    service = BackupService(settings)
    first = service.run_backup()
    client = s3_env.client()
    client.delete_object(Bucket=s3_env.bucket, Key=PREFIX + first["fileName"])
    service.catalog.patch(first["fileName"], locations=["local"])  # as if its upload had failed
    (settings.backup_dir / first["fileName"]).unlink()  # and then its file was removed by hand
    with pytest.raises(JobFailed) as caught:
        service.run_backup(service.new_job("backup"))
    assert caught.value.stage == "upload"
    gone = settings.backup_dir / first["fileName"]
    assert f"{first['fileName']}: the local file {gone} is gone, nothing to upload" in str(caught.value)


def test_wrong_credentials_fail_the_upload_stage_clearly_and_keep_the_local_archive(
    s3_settings, s3_env, monkeypatch, caplog
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-0123456789")
    settings = s3_settings()
    service = BackupService(settings)
    job = service.new_job("backup")
    with pytest.raises(JobFailed) as caught:
        service.run_backup(job)
    message = str(caught.value)
    assert caught.value.stage == "upload"
    assert f"S3 at {s3_env.endpoint} refused the credentials for bucket {s3_env.bucket}" in message
    assert "is intact" in message
    entry = service.list_backups()[-1]
    assert entry["status"] == "completed" and entry["locations"] == ["local"]
    assert (settings.backup_dir / entry["fileName"]).is_file()
    recorded = json.dumps(entry) + json.dumps(job.as_json()) + caplog.text
    assert "wrong-secret-value-0123456789" not in recorded and s3_env.secret_key not in recorded
    assert s3_env.keys() == []


def test_a_missing_bucket_fails_the_upload_stage_naming_the_bucket(s3_settings, s3_env):
    settings = s3_settings(s3_bucket="no-such-bucket")
    job = BackupService(settings).new_job("backup")
    with pytest.raises(JobFailed, match=f"bucket no-such-bucket does not exist at {s3_env.endpoint}"):
        BackupService(settings).run_backup(job)


def test_without_a_bucket_nothing_changes(make_settings, sample_counts):
    settings = make_settings(database="maekcord")
    job = BackupService(settings).new_job("backup")
    entry = BackupService(settings).run_backup(job)
    assert entry["locations"] == ["local"] and "remote" not in entry
    assert "uploads" not in job.result
    source = source_for(settings, settings.backup_dir / entry["fileName"], entry)
    with source.open() as opened:
        assert source.location == "local" and counts_of(opened.data) == manifest(entry)


def test_the_source_is_the_bucket_copy_when_the_local_file_is_gone(s3_settings, s3_env):
    settings = s3_settings()
    entry = BackupService(settings).run_backup()
    path = settings.backup_dir / entry["fileName"]
    assert source_for(settings, path, entry).location == "local"  # local file present: the file itself
    stored = path.read_bytes()
    path.unlink()
    source = source_for(settings, path, entry)
    assert isinstance(source, BucketSource) and source.name == path.name and str(source) == str(path)
    assert s3_env.bucket in source.describe()
    with source.open_stored() as raw:
        assert raw.read() == stored
    with source.pinned():  # the first read is spooled; the second reads the spool, not the bucket
        with source.open_stored() as raw:
            assert raw.read() == stored
        s3_env.client().delete_object(Bucket=s3_env.bucket, Key=PREFIX + path.name)
        with source.open_stored() as raw:
            assert raw.read() == stored
    assert not list(settings.backup_dir.glob(".*.partial"))  # the spool is gone
    assert source_for(settings.replace(s3_bucket=""), path, entry).location == "local"  # no bucket


def test_verify_and_restore_read_the_bucket_when_the_local_file_is_gone(
    s3_settings, s3_env, mongo_client, tmp_path
):
    """The issue's must-show: restore from the bucket after deleting the local file (encrypted, too)."""
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"{identity}\n")
    settings = s3_settings(age_recipients=str(identity.to_public()), age_identity_file=str(key_file))
    service = BackupService(settings)
    entry = service.run_backup()
    (settings.backup_dir / entry["fileName"]).unlink()
    assert not any(settings.backup_dir.glob("*.gz*"))

    job = service.new_job("verify", level="full")
    result = service.run_verify(job, file_name=entry["fileName"], level="full")
    assert result["ok"] and result["location"] == "s3"
    assert result["verification"]["quick"]["sha256"] == entry["sha256"]
    assert result["verification"]["full"]["documents"] == sum(manifest(entry).values())

    target = "s3_restore_" + entry["sha256"][:8]
    mongo_client.drop_database(target)
    try:
        restored = service.run_restore(
            file_name=entry["fileName"], ns_from="maekcord.*", ns_to=f"{target}.*", safety_backup=False
        )
        assert restored["verified"]["sha256"] == entry["sha256"]
        for ns, count in manifest(entry).items():
            collection = ns.split(".", 1)[1]
            if entry["namespaces"][ns]["type"] == "collection":
                assert mongo_client[target][collection].count_documents({}) == count, ns
    finally:
        mongo_client.drop_database(target)
    # and with neither copy, the error says so
    s3_env.client().delete_object(Bucket=s3_env.bucket, Key=PREFIX + entry["fileName"])
    with pytest.raises(JobFailed, match=f"object {PREFIX}{entry['fileName']} is not in bucket"):
        service.run_verify(file_name=entry["fileName"], level="quick")


def damage_object(s3_env, key: str) -> None:
    data = bytearray(object_bytes(s3_env, key))
    data[len(data) // 2] ^= 0xFF
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=bytes(data))


def test_a_drill_restores_the_bytes_its_scan_verified_when_the_bucket_copy_changes(
    s3_settings, s3_env, mongo_uri
):
    """Verified before the first write: the bucket object changes after the scan, before the drill's
    restore reads it again; the drill restores the spooled bytes that were verified."""
    settings = s3_settings()
    entry = BackupService(settings).run_backup()
    path = settings.backup_dir / entry["fileName"]
    path.unlink()

    def drill_server(raw_bytes: int):  # called between the scan and the drill's restore
        damage_object(s3_env, PREFIX + entry["fileName"])
        return given_server(mongo_uri)

    report = verify_archive(
        source_for(settings, path, entry), entry, "drill", job_id="pin", drill_server=drill_server
    )
    assert report.ok, report.reason
    assert report.records["drill"]["documents"] == report.records["full"]["documents"]
    assert not list(settings.backup_dir.glob(".*.partial"))  # the spool is gone


def test_a_restore_writes_the_bytes_it_verified_when_the_bucket_copy_changes(
    s3_settings, s3_env, mongo_client, monkeypatch
):
    """The bucket object changes after the restore's verify pass, before its write pass."""
    import sidecar.service.restore as restore_job

    settings = s3_settings()
    service = BackupService(settings)
    entry = service.run_backup()
    (settings.backup_dir / entry["fileName"]).unlink()
    real_inspect = restore_job.inspect_targets

    def inspect_after_changing_the_object(*args, **kwargs):  # after the verify pass, before any write
        damage_object(s3_env, PREFIX + entry["fileName"])
        return real_inspect(*args, **kwargs)

    monkeypatch.setattr(restore_job, "inspect_targets", inspect_after_changing_the_object)
    target = "pin_restore_" + entry["sha256"][:8]
    mongo_client.drop_database(target)
    try:
        restored = service.run_restore(
            file_name=entry["fileName"], ns_from="maekcord.*", ns_to=f"{target}.*", safety_backup=False
        )
        assert restored["verified"]["sha256"] == entry["sha256"] and restored["postRestoreCheck"]["ok"]
        for ns, count in manifest(entry).items():
            if entry["namespaces"][ns]["type"] == "collection":
                assert mongo_client[target][ns.split(".", 1)[1]].count_documents({}) == count, ns
    finally:
        mongo_client.drop_database(target)
