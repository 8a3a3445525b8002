"""The S3 backend against a real S3-compatible store (SeaweedFS ``weed mini`` on 127.0.0.1).

Multipart streaming, listing, reading back, checks before an object is trusted, an upload cut off by
the store going away, and the errors an operator sees for wrong credentials, a missing bucket and an
unreachable endpoint (naming bucket and endpoint, never the secret key).
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import pytest

from sidecar.embedded import free_port
from sidecar.store.catalog import archive_name_pattern
from sidecar.store.objects import StoreError
from sidecar.store.s3 import S3Backend
from tests import s3_fixture
from tests.s3_fixture import SeaweedS3

seaweed, s3_env = s3_fixture.seaweed, s3_fixture.s3_env  # the fixtures, for pytest to find

MIB = 1024 * 1024


def backend(server: SeaweedS3, **overrides) -> S3Backend:
    options = {"prefix": "prod/db1/", "endpoint": server.endpoint, "part_size": 5 * MIB}
    options.update(overrides)
    return S3Backend(options.pop("bucket", server.bucket), **options)


def stream_into(upload, data: bytes) -> None:
    rng, pos = random.Random(3), 0
    while pos < len(data):
        step = rng.choice((1000, 65536, 1 << 20, 3 << 20))
        upload.write(data[pos : pos + step])
        pos += step


def test_multipart_upload_streams_parts_and_reads_back(s3_env):
    s3 = backend(s3_env)
    s3.check()
    data = random.Random(1).randbytes(11 * MIB + 123)  # three parts of 5 MiB, 5 MiB, 1 MiB
    digest = hashlib.sha256(data).hexdigest()
    upload = s3.writer("b-2025-01-01T02-00-00.gz", sha256=digest)
    stream_into(upload, data)
    info = upload.commit(expected_size=len(data), expected_sha256=digest)
    assert (info.name, info.size, info.sha256, info.key) == (
        "b-2025-01-01T02-00-00.gz",
        len(data),
        digest,
        "prod/db1/b-2025-01-01T02-00-00.gz",
    )
    assert info.etag.endswith("-3")  # a real three-part multipart object
    assert s3_env.keys() == ["prod/db1/b-2025-01-01T02-00-00.gz"]
    assert s3_env.open_uploads() == []
    with s3.open("b-2025-01-01T02-00-00.gz") as body:
        back = b"".join(iter(lambda: body.read(1 << 20), b""))
    assert back == data
    assert hashlib.sha256(back).hexdigest() == digest
    assert s3.stat("b-2025-01-01T02-00-00.gz").size == len(data)
    s3.delete("b-2025-01-01T02-00-00.gz")
    assert s3.stat("b-2025-01-01T02-00-00.gz") is None


def test_listing_shows_archives_under_the_prefix_only(s3_env, tmp_path):
    s3 = backend(s3_env, names=archive_name_pattern("a"))  # what from_settings gives for prefix "a"
    client = s3_env.client()
    for key in ("prod/db1/a-2025-01-01T02-00-00.gz", "prod/db1/a-2025-01-02T02-00-00.gz.age"):
        client.put_object(Bucket=s3_env.bucket, Key=key, Body=b"x" * 10)
    for key in (
        "prod/db1/notes.txt",
        "prod/db1/sub/a-2025-01-03T02-00-00.gz",
        "prod/db2/a-2025-01-04T02-00-00.gz",
    ):
        client.put_object(Bucket=s3_env.bucket, Key=key, Body=b"x")
    (tmp_path / "c.gz").write_bytes(b"0123456789")
    s3.put_file("a-2025-01-05T02-00-00.gz", tmp_path / "c.gz")
    s3.put_file("c-2025-01-05T02-00-00.gz", tmp_path / "c.gz")  # another deployment's prefix
    listed = {o.name: o.size for o in s3.list()}
    assert listed == {
        "a-2025-01-01T02-00-00.gz": 10,
        "a-2025-01-02T02-00-00.gz.age": 10,
        "a-2025-01-05T02-00-00.gz": 10,
    }


def test_empty_archive_and_storage_options(s3_env):
    s3 = backend(s3_env, storage_class="STANDARD", sse="AES256")
    upload = s3.writer("e-2025-01-01T02-00-00.gz")
    info = upload.commit(expected_size=0)
    assert info.size == 0
    head = s3_env.client().head_object(Bucket=s3_env.bucket, Key=info.key)
    assert head.get("ServerSideEncryption") == "AES256"


def test_a_mismatch_leaves_no_object(s3_env, tmp_path):
    s3 = backend(s3_env)
    upload = s3.writer("m-2025-01-01T02-00-00.gz")
    upload.write(b"what the catalog does not expect")
    with pytest.raises(StoreError, match="hash to sha256") as caught:
        upload.commit(expected_sha256="0" * 64)
    assert caught.value.kind == "mismatch"
    path = tmp_path / "local.gz"
    path.write_bytes(b"changed on disk after the backup")
    with pytest.raises(StoreError, match="local file changed"):
        s3.put_file("n-2025-01-01T02-00-00.gz", path, expected_sha256="f" * 64)
    assert s3_env.keys() == [] and s3_env.open_uploads() == []


def parts_done(upload: Any) -> int:
    """Parts the store has acknowledged so far."""
    return len(upload._parts)


def test_an_upload_cut_off_by_the_store_stopping_leaves_no_object(tmp_path, monkeypatch):
    server = SeaweedS3(tmp_path / "own-seaweed").start()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        s3 = backend(server)
        upload = s3.writer("i-2025-01-01T02-00-00.gz")
        data = random.Random(4).randbytes(12 * MIB)
        upload.write(data[: 6 * MIB])  # part 1 goes up in the background
        deadline = time.monotonic() + 30
        while parts_done(upload) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert parts_done(upload) == 1, "the first part never reached the store"
        server.kill()  # the store goes away mid-upload
        with pytest.raises(StoreError) as caught:
            upload.write(data[6 * MIB :])
            upload.commit(expected_size=len(data))
        assert caught.value.kind == "unreachable"
        assert server.endpoint in str(caught.value) and server.bucket in str(caught.value)
        server.start()  # back on the same ports and data
        assert server.keys() == []  # never completed: no object anyone could trust
        assert server.open_uploads() == ["prod/db1/i-2025-01-01T02-00-00.gz"]  # the abort could not reach it
        assert s3.abort_stale_uploads() == ["prod/db1/i-2025-01-01T02-00-00.gz"]
        assert server.open_uploads() == []
    finally:
        server.stop()


def test_wrong_credentials_are_named_without_the_secret(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-not-the-secret-1234")
    s3 = backend(s3_env)
    with pytest.raises(StoreError) as caught:
        s3.check()
    message = str(caught.value)
    assert caught.value.kind == "credentials"
    assert s3_env.bucket in message and s3_env.endpoint in message
    assert "AWS_SECRET_ACCESS_KEY" in message and "from env" in message
    assert "definitely-not-the-secret-1234" not in message and s3_env.secret_key not in message
    assert s3_env.access_key not in message  # only its first characters
    with pytest.raises(StoreError) as caught:
        s3.writer("w-2025-01-01T02-00-00.gz")
    assert caught.value.kind == "credentials"


def test_missing_credentials_say_where_to_put_them(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match=r"no S3 credentials for bucket .* set AWS_ACCESS_KEY_ID"):
        backend(s3_env).check()


def test_a_missing_bucket_is_named(s3_env):
    s3 = backend(s3_env, bucket="no-such-bucket")
    with pytest.raises(StoreError) as caught:
        s3.check()
    assert caught.value.kind == "bucket"
    assert str(caught.value).startswith(f"bucket no-such-bucket does not exist at {s3_env.endpoint}")
    with pytest.raises(StoreError, match="bucket no-such-bucket does not exist"):
        s3.writer("x-2025-01-01T02-00-00.gz")


def test_an_unreachable_endpoint_is_named(s3_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    s3 = backend(s3_env, endpoint=endpoint)
    s3.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StoreError) as caught:
        s3.check()
    assert caught.value.kind == "unreachable"
    assert f"cannot reach S3 at {endpoint} (bucket {s3_env.bucket})" in str(caught.value)


def test_reading_a_missing_object(s3_env):
    with pytest.raises(StoreError, match=r"object prod/db1/gone.gz is not in bucket"):
        backend(s3_env).open("gone.gz")


def test_an_object_reads_as_a_binary_file_and_a_cut_read_names_the_object(s3_env):
    s3 = backend(s3_env)
    data = random.Random(5).randbytes(100_000)
    upload = s3.writer("r-2025-01-01T02-00-00.gz")
    upload.write(data)
    upload.commit(expected_size=len(data))
    for size in (None, -1):  # the whole rest, as a file's read gives it
        with s3.open("r-2025-01-01T02-00-00.gz") as body:
            assert body.read(10) == data[:10] and body.read(size) == data[10:]
    body = s3.open("r-2025-01-01T02-00-00.gz")
    body.read(10)
    body.close()  # the connection goes: the rest of the object never arrives
    with pytest.raises(StoreError) as caught:
        body.read()
    assert caught.value.kind == "unreachable"
    assert str(caught.value) == (
        f"cannot reach S3 at {s3_env.endpoint} (bucket {s3_env.bucket}) to read "
        "prod/db1/r-2025-01-01T02-00-00.gz: IncompleteReadError"
    )


def test_an_aborted_upload_leaves_nothing_and_says_it_was_aborted(s3_env):
    s3 = backend(s3_env)
    upload = s3.writer("a-2025-01-01T02-00-00.gz")
    upload.write(random.Random(6).randbytes(6 * MIB))  # one part goes up
    upload.abort()
    assert (upload.error.kind, str(upload.error)) == (
        "aborted",
        "upload of prod/db1/a-2025-01-01T02-00-00.gz aborted",
    )
    assert s3_env.keys() == [] and s3_env.open_uploads() == []
    with pytest.raises(ValueError, match="write to a finished upload"):
        upload.write(b"more")


def test_an_upload_asks_for_plain_bytes_and_no_server_side_encryption_unless_configured(s3_env):
    """What every PutObject/CreateMultipartUpload sends (SeaweedFS then types the object by its name)."""
    assert backend(s3_env).put_args() == {"Bucket": s3_env.bucket, "ContentType": "application/octet-stream"}


def test_a_failure_to_start_or_finish_an_upload_names_the_step_and_the_object(s3_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    away = backend(s3_env, endpoint=endpoint)
    away.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StoreError) as unstarted:
        away.writer("s-2025-01-01T02-00-00.gz")
    assert str(unstarted.value) == (
        f"cannot reach S3 at {endpoint} (bucket {s3_env.bucket}) to start the upload "
        "prod/db1/s-2025-01-01T02-00-00.gz: EndpointConnectionError"
    )
    upload = backend(s3_env).writer("f-2025-01-01T02-00-00.gz")
    upload.write(random.Random(7).randbytes(5 * MIB))  # one whole part: nothing is left to send at commit
    deadline = time.monotonic() + 30
    while parts_done(upload) < 1:
        assert time.monotonic() < deadline, "the part never reached the store"
        time.sleep(0.05)
    # the multipart upload is gone when the last step comes (another process cleaned up)
    s3_env.client().abort_multipart_upload(Bucket=s3_env.bucket, Key=upload.key, UploadId=upload.upload_id)
    with pytest.raises(StoreError) as unfinished:
        upload.commit()
    assert unfinished.value.kind == "error"
    assert str(unfinished.value).startswith(
        f"S3 finish the upload of prod/db1/f-2025-01-01T02-00-00.gz in bucket {s3_env.bucket} at "
        f"{s3_env.endpoint} failed: NoSuchUpload"
    )
