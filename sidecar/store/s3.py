"""An S3-compatible bucket as a storage backend (AWS S3, MinIO, Ceph RGW, SeaweedFS) through boto3.

Archives go up as multipart uploads, streamed part by part (a background thread sends one part while
the next is filled), so memory stays at about two parts whatever the archive size. An upload becomes
an object only by ``commit()``, after the bytes' size and sha256 match what the caller expects, and
the object's size is read back; anything else aborts the multipart upload, so an interrupted upload
leaves no object behind (at worst an unfinished multipart upload, which ``abort_stale_uploads``
removes on the next run).

Credentials come from boto3's standard chain only: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
a credentials file (``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_PROFILE``), web identity or instance roles.
Errors name the bucket, the endpoint and where the credentials came from; never the secret key.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from sidecar.store.catalog import archive_name_pattern
from sidecar.store.objects import S3, Digest, ObjectInfo, StoreError

log = logging.getLogger("sidecar.store.s3")
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
}


def _failure(message: str, kind: str) -> StoreError:
    """A StoreError of the bucket (``kind`` as StoreError says)."""
    return StoreError(message, S3, kind)


class S3Backend:
    """One bucket and key prefix. Object key = ``prefix + file name``."""

    name = S3

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str = "",
        region: str = "us-east-1",
        path_style: bool = True,
        storage_class: str = "",
        sse: str = "none",
        sse_kms_key_id: str = "",
        part_size: int = 16 * 1024 * 1024,
        names: re.Pattern[str] | None = None,
        client: Any = None,
    ):
        self.names = names  # the archive names this deployment owns; None: every object under the prefix
        self.bucket, self.prefix, self.endpoint, self.region = bucket, prefix, endpoint, region
        self.storage_class, self.sse, self.sse_kms_key_id = storage_class, sse, sse_kms_key_id
        self.part_size = part_size
        self._session = boto3.session.Session()
        self.client = client or self._session.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            config=Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                signature_version="s3v4",
            ),
        )

    @classmethod
    def from_settings(
        cls, settings: Any, *, sub_prefix: str = "", names: re.Pattern[str] | None = None
    ) -> S3Backend:
        """The archives' bucket; ``sub_prefix`` and ``names``: another kind of object under the prefix
        (the oplog slices: ``oplog/``, their names)."""
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix + sub_prefix,
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            path_style=settings.s3_path_style,
            storage_class=settings.s3_storage_class,
            sse=settings.s3_sse,
            sse_kms_key_id=settings.s3_sse_kms_key_id,
            part_size=settings.s3_part_size_bytes,
            names=names or archive_name_pattern(settings.file_prefix),
        )

    # -- naming and errors -----------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.where}"

    def key(self, name: str) -> str:
        return self.prefix + name

    def owns(self, key: str) -> bool:
        """Is ``key`` an archive of ours: directly under the prefix and named like our archives?"""
        name = key[len(self.prefix) :]
        if not key.startswith(self.prefix) or "/" in name:
            return False
        return self.names is None or self.names.fullmatch(name) is not None

    def _credentials_hint(self) -> str:
        try:
            creds = self._session.get_credentials()
        except Exception:  # a broken credentials file: say so without detail that might leak
            return "the credentials could not be loaded"
        if creds is None:
            return "no credentials were found"
        access = creds.access_key or ""
        shown = f"{access[:4]}…" if len(access) > 8 else "(short)"
        return f"access key {shown} from {getattr(creds, 'method', 'unknown source')}"

    def error(self, exc: BaseException, action: str, name: str | None = None) -> StoreError:
        """A StoreError saying what failed, where, and what to check; never carries the secret."""
        if isinstance(exc, StoreError):
            return exc
        obj = f" {self.key(name)}" if name else ""
        bucket, where = self.bucket, self.where
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return _failure(
                f"no S3 credentials for bucket {bucket} at {where}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or a credentials file (AWS_SHARED_CREDENTIALS_FILE / AWS_PROFILE)",
                "credentials",
            )
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code in ("404", "NotFound") and action == "check the bucket"):
                return _failure(
                    f"bucket {bucket} does not exist at {where} (create it, or fix SIDECAR_S3_BUCKET / "
                    f"SIDECAR_S3_ENDPOINT)",
                    "bucket",
                )
            if code in _CREDENTIAL_CODES or (code in ("403", "Forbidden") and action == "check the bucket"):
                return _failure(
                    f"S3 at {where} refused the credentials for bucket {bucket} ({code or status}; "
                    f"{self._credentials_hint()}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    f"or the credentials file",
                    "credentials",
                )
            if code in ("AccessDenied", "403", "Forbidden"):
                return _failure(
                    f"S3 at {where} denied {action}{obj} in bucket {bucket} ({self._credentials_hint()}): "
                    f"the credentials lack a permission (s3:PutObject, GetObject, ListBucket, DeleteObject, "
                    f"AbortMultipartUpload)",
                    "credentials",
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return _failure(f"object{obj} is not in bucket {bucket} at {where}", "missing")
            message = err.get("Message") or ""
            return _failure(
                f"S3 {action}{obj} in bucket {bucket} at {where} failed: {code or status} {message}".rstrip(),
                "error",
            )
        if isinstance(exc, ConnectionError | BotoCoreError | OSError):
            return _failure(
                f"cannot reach S3 at {where} (bucket {bucket}) to {action}{obj}: {type(exc).__name__}",
                "unreachable",
            )
        return _failure(f"S3 {action}{obj} in bucket {bucket} at {where} failed: {exc}", "error")

    def _call(self, action: str, fn: Callable[..., Any], name: str | None = None, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise self.error(exc, action, name) from None

    # -- the bucket's operations ------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and the credentials work, or a StoreError saying which does not."""
        self._call("check the bucket", self.client.head_bucket, Bucket=self.bucket)

    def put_args(self, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": self.bucket, "ContentType": "application/octet-stream"}
        if metadata:
            args["Metadata"] = metadata
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse != "none":
            args["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def writer(self, name: str, *, sha256: str | None = None) -> S3Upload:
        return S3Upload(self, name, {"sha256": sha256} if sha256 else None)

    def put_file(self, name: str, path: Path, *, expected_sha256: str | None = None) -> ObjectInfo:
        """Upload a local file; the bytes sent must hash to ``expected_sha256`` or nothing is kept."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(
                f"cannot read {path} for upload: {exc.strerror or exc}", "local", "missing"
            ) from None
        upload = self.writer(name, sha256=expected_sha256)
        try:
            with handle:
                size = path.stat().st_size
                while block := handle.read(1 << 20):
                    upload.write(block)
            return upload.commit(expected_size=size, expected_sha256=expected_sha256)
        except BaseException:
            upload.abort()
            raise

    def open(self, name: str) -> BinaryIO:
        answer = self._call("read", self.client.get_object, name, Bucket=self.bucket, Key=self.key(name))
        return _Body(answer["Body"], self, name)

    def list(self) -> list[ObjectInfo]:
        """Archive-named objects directly under the prefix."""
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            return [
                ObjectInfo(
                    obj["Key"][len(self.prefix) :],
                    obj["Size"],
                    etag=obj.get("ETag", "").strip('"'),
                    key=obj["Key"],
                )
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
                for obj in page.get("Contents", [])
                if self.owns(obj["Key"])
            ]
        except Exception as exc:
            raise self.error(exc, "list") from None

    def delete(self, name: str) -> None:
        self._call("delete", self.client.delete_object, name, Bucket=self.bucket, Key=self.key(name))

    def stat(self, name: str) -> ObjectInfo | None:
        """Size, etag and the sha256 recorded at upload (object metadata), or None if absent."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self.error(exc, "stat", name) from None
        except Exception as exc:
            raise self.error(exc, "stat", name) from None
        return ObjectInfo(
            name,
            head["ContentLength"],
            etag=head.get("ETag", "").strip('"'),
            sha256=head.get("Metadata", {}).get("sha256"),
            key=self.key(name),
        )

    def abort_stale_uploads(self) -> list[str]:
        """Abort unfinished multipart uploads of our archives under the prefix (left by a killed process).

        Call it only while holding the job lock: an upload in progress in this process is not stale.
        """
        aborted = []
        try:
            answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
            for upload in answer.get("Uploads", []):
                if self.owns(upload["Key"]):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(upload["Key"])
        except Exception as exc:
            raise self.error(exc, "clean up unfinished uploads") from None
        return aborted


class _Body:
    """A GetObject body as a binary stream whose read errors are StoreErrors naming the object."""

    def __init__(self, body: Any, backend: S3Backend, name: str):
        self._body, self._backend, self._name = body, backend, name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as exc:
            raise self._backend.error(exc, "read", self._name) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DONE = object()


class S3Upload:
    """A streaming multipart upload: ``write()`` bytes, then ``commit()`` or ``abort()``.

    The bytes are hashed (sha256) and counted as they pass; a background thread uploads each full
    part while the caller fills the next one. Any failure leaves ``error`` set; ``commit()`` then
    aborts and raises it.
    """

    def __init__(self, backend: S3Backend, name: str, metadata: dict[str, str] | None = None):
        self.backend, self.name = backend, name
        self.key = backend.key(name)
        self.digest = Digest()
        self.error: StoreError | None = None
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._finished = False
        self._queued = 0
        created = backend._call(
            "start the upload",
            backend.client.create_multipart_upload,
            name,
            Key=self.key,
            **backend.put_args(metadata),
        )
        self.upload_id = created["UploadId"]
        self._queue: queue.Queue = queue.Queue(1)
        self._thread = threading.Thread(target=self._send_parts, name=f"s3-upload-{name}", daemon=True)
        self._thread.start()

    def _send_parts(self) -> None:
        number = 0
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self.error is not None:
                continue  # keep taking items so the writer never blocks; it sees the error
            number += 1
            try:
                answer = self.backend.client.upload_part(
                    Bucket=self.backend.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=item,
                )
                self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            except Exception as exc:
                self.error = self.backend.error(exc, f"upload part {number} of", self.name)

    def write(self, data: Any) -> int:
        if self._finished:
            raise ValueError("write to a finished upload")
        if self.error is not None:
            raise self.error
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self._buffer += view
        part = self.backend.part_size
        while len(self._buffer) >= part:
            self._queue.put(bytes(self._buffer[:part]))
            self._queued += 1
            del self._buffer[:part]
        return len(view)

    def _stop_sender(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def commit(self, *, expected_size: int | None = None, expected_sha256: str | None = None) -> ObjectInfo:
        """Finish the object if everything matches; otherwise abort and raise StoreError."""
        if self._finished:
            raise ValueError("upload already finished")
        try:
            if self._buffer or not self._queued:  # the last part; an empty archive still needs one
                self._queue.put(bytes(self._buffer))
                self._queued += 1
                self._buffer.clear()
            self._stop_sender()
            if self.error is not None:
                raise self.error
            digest, size = self.digest.hexdigest(), self.digest.size
            where = f"{self.key} in bucket {self.backend.bucket} at {self.backend.where}"
            if expected_size is not None and expected_size != size:
                raise _failure(
                    f"upload of {where} stopped: {size} bytes sent, the archive has {expected_size}",
                    "mismatch",
                )
            if expected_sha256 and expected_sha256 != digest:
                raise _failure(
                    f"upload of {where} stopped: the bytes sent hash to sha256 {digest[:16]}…, the catalog "
                    f"recorded {expected_sha256[:16]}… (the local file changed since it was written)",
                    "mismatch",
                )
            backend = self.backend
            backend._call(
                "finish the upload of",
                backend.client.complete_multipart_upload,
                self.name,
                Bucket=backend.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
            )
            self._finished = True
        except BaseException:
            self.abort()
            raise
        head = backend.stat(self.name)
        if head is None or head.size != size:
            with contextlib.suppress(Exception):
                backend.client.delete_object(Bucket=backend.bucket, Key=self.key)
            raise _failure(
                f"upload of {where} did not check out: the store reports "
                f"{'no object' if head is None else f'{head.size} bytes'}, {size} were sent; "
                f"the object was removed",
                "mismatch",
            )
        head.sha256 = digest
        return head

    def abort(self) -> None:
        """Drop the parts sent so far. Best effort: if the store is down, the next run cleans up."""
        if self._finished:
            return
        self._finished = True
        self.error = self.error or _failure(f"upload of {self.key} aborted", "aborted")
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._stop_sender()
        try:
            self.backend.client.abort_multipart_upload(
                Bucket=self.backend.bucket, Key=self.key, UploadId=self.upload_id
            )
        except Exception as exc:
            log.warning(
                "could not abort the unfinished upload of %s in bucket %s (%s); the next run removes it",
                self.key,
                self.backend.bucket,
                self.backend.error(exc, "abort the upload of", self.name),
            )
