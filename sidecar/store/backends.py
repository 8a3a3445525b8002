"""Where archives live, behind one interface: the local backup directory and an S3-compatible bucket.

Every backend can ``put`` (a streaming writer, committed only when size and sha256 check out), ``open``
an archive for streaming reads, ``list``, ``delete`` and ``stat`` (optionally hashing the content).
Names are catalog file names (``{prefix}-{time}.gz``, or ``.gz.age`` when encrypted); the S3 backend
maps a name to the key ``SIDECAR_S3_PREFIX + name``.

``open_archive(settings, entry)`` is what verify, drill and restore read through: it finds a copy
(the local file, else the bucket), checks the sha256 the catalog recorded as the bytes stream past,
and decrypts age archives with ``SIDECAR_AGE_IDENTITY_FILE``; out come the gzip bytes that
``mongorestore --archive --gzip`` (or ``sidecar.engine.compression.gzip_reader``) reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sidecar.store.catalog import PARTIAL_SUFFIX, Catalog, Entry, fsync_dir

if TYPE_CHECKING:
    from sidecar.config import Settings

LOCAL, S3 = "local", "s3"
_ARCHIVE_FILE = re.compile(r"[^.][^/]*\.gz(\.age)?")


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
    modified: float | None = None  # epoch seconds
    etag: str | None = None
    sha256: str | None = None
    key: str | None = None  # the object key in a bucket


class Upload(Protocol):
    def write(self, data: Any) -> int: ...

    def commit(
        self, *, expected_size: int | None = None, expected_sha256: str | None = None
    ) -> ObjectInfo: ...

    def abort(self) -> None: ...


class Backend(Protocol):
    name: str

    def describe(self) -> str: ...

    def check(self) -> None: ...

    def writer(self, name: str, *, sha256: str | None = None) -> Upload: ...

    def put_file(self, name: str, path: Path, *, expected_sha256: str | None = None) -> ObjectInfo: ...

    def open(self, name: str) -> BinaryIO: ...

    def list(self) -> list[ObjectInfo]: ...

    def delete(self, name: str) -> None: ...

    def stat(self, name: str, *, sha256: bool = False) -> ObjectInfo | None: ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class LocalBackend:
    """The backup directory. Writes go to ``.NAME.partial``, are fsynced, then renamed."""

    name = LOCAL

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def describe(self) -> str:
        return str(self.directory)

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise StoreError(f"{name!r} is not an archive name", LOCAL, "error")
        return self.directory / name

    def check(self) -> None:
        if not self.directory.is_dir():
            raise StoreError(f"backup directory {self.directory} does not exist", LOCAL, "missing")

    def writer(self, name: str, *, sha256: str | None = None) -> _LocalUpload:
        return _LocalUpload(self, name)

    def put_file(self, name: str, path: Path, *, expected_sha256: str | None = None) -> ObjectInfo:
        upload = self.writer(name)
        try:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    upload.write(block)
            return upload.commit(expected_sha256=expected_sha256)
        except BaseException:
            upload.abort()
            raise

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path(name), "rb")
        except FileNotFoundError:
            raise StoreError(f"{name} is not in {self.directory}", LOCAL, "missing") from None
        except OSError as exc:
            raise StoreError(
                f"cannot read {self.path(name)}: {exc.strerror or exc}", LOCAL, "error"
            ) from None

    def list(self) -> list[ObjectInfo]:
        found = []
        for entry in os.scandir(self.directory):
            if entry.is_file() and _ARCHIVE_FILE.fullmatch(entry.name):
                st = entry.stat()
                found.append(ObjectInfo(entry.name, st.st_size, modified=st.st_mtime))
        return sorted(found, key=lambda o: o.name)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def stat(self, name: str, *, sha256: bool = False) -> ObjectInfo | None:
        path = self.path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(
            name, st.st_size, modified=st.st_mtime, sha256=file_sha256(path) if sha256 else None
        )


class _LocalUpload:
    def __init__(self, backend: LocalBackend, name: str):
        self.final = backend.path(name)
        self.partial = backend.directory / f".{name}{PARTIAL_SUFFIX}"
        self.handle = open(self.partial, "xb")  # noqa: SIM115 - closed by commit/abort
        self.sha256, self.size = hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        return self.handle.write(view)

    def commit(self, *, expected_size: int | None = None, expected_sha256: str | None = None) -> ObjectInfo:
        digest = self.sha256.hexdigest()
        try:
            if expected_size is not None and expected_size != self.size:
                raise StoreError(f"{self.final.name}: wrote {self.size} bytes, expected {expected_size}")
            if expected_sha256 and expected_sha256 != digest:
                raise StoreError(f"{self.final.name}: sha256 of the copy differs from the catalog's")
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.partial, self.final)
            fsync_dir(self.final.parent)
        except BaseException:
            self.abort()
            raise
        st = self.final.stat()
        return ObjectInfo(self.final.name, st.st_size, modified=st.st_mtime, sha256=digest)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        self.partial.unlink(missing_ok=True)


def s3_configured(settings: Settings) -> bool:
    return bool(settings.s3_bucket)


# -- reading an archive back ---------------------------------------------------------------------


class _HashingReader:
    """Hashes the stored bytes as they are read; at the end compares with the recorded sha256."""

    def __init__(self, raw: BinaryIO, expected: str | None, what: str, destination: str):
        self.raw, self.expected, self.what, self.destination = raw, expected, what, destination
        self.digest, self.size = hashlib.sha256(), 0
        self.verified = False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self.digest.update(data)
            self.size += len(data)
        elif size != 0:
            self._check()
        return data

    def _check(self) -> None:
        if self.verified or not self.expected:
            return
        actual = self.digest.hexdigest()
        if actual != self.expected:
            raise StoreError(
                f"{self.what} is damaged: its {self.size} bytes hash to sha256 {actual[:16]}…, "
                f"the catalog recorded {self.expected[:16]}…",
                self.destination,
                "mismatch",
            )
        self.verified = True


class ArchiveStream(io.RawIOBase):
    """The gzip bytes of one archive, read from one copy (decrypted when it is an age file).

    Reading to the end checks the stored bytes against the sha256 the catalog recorded (a mismatch
    raises StoreError); ``verified`` tells whether that check ran and passed, ``sha256`` is the hash
    of the stored (possibly encrypted) bytes read so far.
    """

    def __init__(
        self,
        top: BinaryIO,
        hashing: _HashingReader,
        *,
        name: str,
        location: str,
        source: str,
        encrypted: bool,
    ):
        super().__init__()
        self._top, self._hashing = top, hashing
        self.name, self.location, self.source, self.encrypted = name, location, source, encrypted

    @property
    def verified(self) -> bool:
        return self._hashing.verified

    @property
    def sha256(self) -> str:
        return self._hashing.digest.hexdigest()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        data = self._top.read(len(target))
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            with contextlib.suppress(Exception):
                if self._top is not self._hashing:
                    self._top.close()
            with contextlib.suppress(Exception):
                self._hashing.raw.close()
        finally:
            super().close()


def _identities(settings: Settings, what: str) -> tuple[list[Any], str]:
    from sidecar.engine.encryption import EncryptionError, load_identities

    if not settings.age_identity_file:
        raise EncryptionError(
            f"{what} is encrypted (age): set SIDECAR_AGE_IDENTITY_FILE to an identity file holding the "
            f"private key of one of its recipients"
        )
    return load_identities(
        settings.age_identity_file
    ), f"SIDECAR_AGE_IDENTITY_FILE ({settings.age_identity_file})"


def _wrap(
    raw: BinaryIO,
    settings: Settings,
    *,
    name: str,
    location: str,
    source: str,
    expected: str | None,
    encrypted: bool,
    decrypt: bool,
) -> ArchiveStream:
    hashing = _HashingReader(raw, expected, source, location)
    top: Any = hashing
    if encrypted and decrypt:
        from sidecar.engine.encryption import decrypt_reader

        try:
            identities, keys = _identities(settings, source)
        except BaseException:
            raw.close()
            raise
        top = decrypt_reader(hashing, identities, source=source, keys=keys)  # type: ignore[arg-type]
    return ArchiveStream(top, hashing, name=name, location=location, source=source, encrypted=encrypted)


def _locations(entry: Entry) -> list[str]:
    return list(entry.get("locations") or [LOCAL])


def open_archive(
    settings: Settings,
    entry: Entry | str,
    *,
    location: str | None = None,
    decrypt: bool = True,
) -> ArchiveStream:
    """A stream of the archive's gzip bytes, from the local file if it is there, else from the bucket.

    ``entry`` is a catalog entry or a file name in the catalog; ``location`` forces ``local`` or
    ``s3``. With ``decrypt=False`` an age archive comes out still encrypted (for checksum-only checks).
    Raises StoreError (no readable copy, with the reason for each place tried) or EncryptionError
    (encrypted and no identity, or the identity does not match: raised on the first read).
    """
    if isinstance(entry, str):
        found = Catalog(settings.backup_dir).get(entry)
        if found is None:
            raise StoreError(f"{entry} is not in the catalog in {settings.backup_dir}", LOCAL, "missing")
        entry = found
    name = entry["fileName"]
    encrypted = name.endswith(".age")
    where = _locations(entry)
    tried: list[str] = []
    order = [location] if location else [d for d in (LOCAL, S3) if d in where]
    for place in order:
        if place == LOCAL:
            path = settings.backup_dir / name
            try:
                raw = open(path, "rb")  # noqa: SIM115 - owned by the returned stream
            except OSError as exc:
                tried.append(f"local file {path}: {exc.strerror or exc}")
                continue
            return _wrap(
                raw,
                settings,
                name=name,
                location=LOCAL,
                source=f"{name} (local)",
                expected=entry.get("sha256"),
                encrypted=encrypted,
                decrypt=decrypt,
            )
        if place == S3:
            if not s3_configured(settings):
                tried.append("s3: SIDECAR_S3_BUCKET is not set")
                continue
            from sidecar.store.s3 import S3Backend

            backend = S3Backend.from_settings(settings)
            remote = (entry.get("remote") or {}).get(S3) or {}
            try:
                raw = backend.open(name)
            except StoreError as exc:
                tried.append(f"s3: {exc}")
                continue
            return _wrap(
                raw,
                settings,
                name=name,
                location=S3,
                source=f"{name} (s3://{backend.bucket}/{backend.key(name)})",
                expected=remote.get("sha256") or entry.get("sha256"),
                encrypted=encrypted,
                decrypt=decrypt,
            )
        tried.append(f"{place}: unknown location")
    if not tried:
        tried.append(f"the catalog lists no copy (locations {where})")
    raise StoreError(f"no readable copy of {name}: " + "; ".join(tried), location or LOCAL, "missing")


class RemoteArchive(PurePosixPath):
    """Stands for an archive whose local file is gone but which the bucket holds.

    It is the path the local file would have (so code that labels, names or stats archives by path
    keeps working: ``os.stat`` says it does not exist) and ``open_stored()`` streams the stored bytes
    from the bucket. Readers that take a path open it with ``open_stored(path)`` below.
    """

    settings: Settings
    entry: Entry
    location = S3

    def open_stored(self) -> BinaryIO:
        """The stored bytes (still encrypted for age archives); ``seek(0)`` works near the start."""
        from sidecar.store.s3 import S3Backend

        return _Rewindable(S3Backend.from_settings(self.settings).open(self.entry["fileName"]))

    def describe(self) -> str:
        return f"{self.name} (s3://{self.settings.s3_bucket}/{self.settings.s3_prefix}{self.name})"


def archive_source(settings: Settings, path: Path, entry: Entry | None) -> Path | RemoteArchive:
    """``path`` when the local file is there (or the entry is not in the bucket), else a RemoteArchive
    reading the bucket's copy: what verify, drills and restores read."""
    if entry is None or Path(path).is_file() or S3 not in _locations(entry) or not s3_configured(settings):
        return path
    remote = RemoteArchive(path)
    remote.settings, remote.entry = settings, entry
    return remote


def open_stored(path: Path | RemoteArchive) -> BinaryIO:
    """The stored bytes of a local file or of a RemoteArchive; StoreError or OSError if unreadable."""
    if isinstance(path, RemoteArchive):
        return path.open_stored()
    return open(path, "rb")


class _Rewindable(io.RawIOBase):
    """A forward-only stream that can go back to 0 while still within its first 64 KiB (to sniff)."""

    _KEEP = 64 * 1024

    def __init__(self, raw: BinaryIO):
        super().__init__()
        self._raw, self._head, self._pos = raw, bytearray(), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or offset > len(self._head) or self._pos > len(self._head):
            raise io.UnsupportedOperation("a remote archive can only go back to its start early on")
        self._pos = offset
        return offset

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if self._pos < len(self._head):
            count = min(len(target), len(self._head) - self._pos)
            target[:count] = self._head[self._pos : self._pos + count]
            self._pos += count
            return count
        data = self._raw.read(len(target))
        if self._pos == len(self._head) and len(self._head) < self._KEEP:
            self._head += data
        target[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._raw.close()
        super().close()


def open_archive_path(settings: Settings, path: str | Path, *, decrypt: bool = True) -> ArchiveStream:
    """Like ``open_archive`` for a file given by path (not in the catalog): age files are recognised by
    their header and decrypted; no recorded sha256 to check."""
    from sidecar.engine.encryption import AGE_MAGIC

    path = Path(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - owned by the returned stream
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}", LOCAL, "missing") from None
    encrypted = raw.read(len(AGE_MAGIC)) == AGE_MAGIC
    raw.seek(0)
    return _wrap(
        raw,
        settings,
        name=path.name,
        location=LOCAL,
        source=str(path),
        expected=None,
        encrypted=encrypted,
        decrypt=decrypt,
    )
