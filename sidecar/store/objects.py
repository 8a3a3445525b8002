"""What every storage place shares: its errors, what it says about an object, the hashing of bytes.

The S3 bucket, the archive source and sink (``source.py``, ``sink.py``) and the off-site copy build on
these types. Nothing here imports another store module, so no cycle can form through it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

LOCAL, S3 = "local", "s3"


class StoreError(RuntimeError):
    """A storage operation failed. ``destination`` is local or s3; ``kind`` is one of credentials,
    bucket, unreachable, missing, mismatch, aborted, error. Messages name the bucket and endpoint or
    the directory, never a secret."""

    def __init__(self, message: str, destination: str = LOCAL, kind: str = "error"):
        super().__init__(message)
        self.destination, self.kind = destination, kind


@dataclass
class ObjectInfo:
    name: str
    size: int
    etag: str | None = None
    sha256: str | None = None
    key: str | None = None  # the object key in a bucket


class Upload(Protocol):
    def write(self, data: Any) -> int: ...

    def commit(
        self, *, expected_size: int | None = None, expected_sha256: str | None = None
    ) -> ObjectInfo: ...

    def abort(self) -> None: ...


class Digest:
    """The sha256 and size of the bytes that pass: the one place archive bytes are hashed."""

    def __init__(self) -> None:
        self._sha256, self.size = hashlib.sha256(), 0

    def update(self, data: Any) -> None:
        self._sha256.update(data)
        self.size += len(data) if isinstance(data, bytes) else memoryview(data).nbytes

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()
