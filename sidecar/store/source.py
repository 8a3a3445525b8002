"""Reading an archive back: the one way, for verify, drills, restores and the stock tools.

An ``ArchiveSource`` is one stored copy of an archive: the local file, or the bucket's copy when the
file is gone. ``open()`` stacks the layers: stored bytes -> sha256 and size -> age decryption (``.age``
files, recognised by their header) -> gunzip, and yields the uncompressed mongodump archive stream.
Any failure below the archive comes out as an ``ArchiveReadError`` whose message is built here, from
the exception's type, once.

``pinned()`` makes every ``open()`` inside it read the very bytes the first one read: the local file
stays open (a rename or deletion does not change what is read), and a bucket copy is spooled to a
private temporary file (``.NAME.spool.partial`` in the backup directory) while the first pass reads
it. A restore verifies in the first pass and writes from the second: the bytes written are the bytes
verified.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from isal import igzip_threaded

from sidecar.archive.format import MAGIC
from sidecar.codec.age_stream import AGE_MAGIC, EncryptionError, decrypt_reader, load_identities
from sidecar.store.catalog import PARTIAL_SUFFIX, Entry
from sidecar.store.objects import LOCAL, S3, Digest, StoreError

if TYPE_CHECKING:
    from sidecar.config import Settings
    from sidecar.store.s3 import S3Backend

IDENTITY_SETTING = "SIDECAR_AGE_IDENTITY_FILE"
_BLOCK = 1 << 20


class ArchiveReadError(Exception):
    """The stored bytes cannot be read through to the archive. ``check`` is ``file`` (no copy, an
    unreadable or empty file, no key) or ``gzip`` (not an archive, damaged or truncated data)."""

    def __init__(self, message: str, check: str, offset: int | None = None):
        super().__init__(message)
        self.check, self.offset = check, offset


def read_failure(exc: BaseException) -> str:
    """What a failure of the layers under the archive (copy, age, gzip) means for the operator."""
    if isinstance(exc, ArchiveReadError | EncryptionError):
        return str(exc)
    if isinstance(exc, StoreError):
        return f"cannot read the stored copy: {exc}"
    if isinstance(exc, EOFError):
        return "the gzip stream is truncated: the file ends before the end of the compressed data"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read the file: {exc.strerror or exc}"
    return f"the compressed data is damaged ({type(exc).__name__}: {exc})"


def sniff(head: bytes) -> str:
    """gzip, archive (uncompressed) or age (encrypted); ArchiveReadError for anything else."""
    if not head:
        raise ArchiveReadError("the file is empty (0 bytes)", "file", 0)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == MAGIC:
        return "archive"
    if head.startswith(AGE_MAGIC[: len(head)]):
        return "age"
    shown = head[:8].decode("ascii", "replace").translate({c: "." for c in range(32)})
    raise ArchiveReadError(
        f"not a gzip-compressed mongodump archive: the file starts with {head[:8].hex()} ({shown!r}); "
        f"a gzip file starts with 1f8b, an archive with {MAGIC.hex()}",
        "gzip",
        0,
    )


class _Counted(io.RawIOBase):
    """Hashes and counts the stored bytes as the layers above read them; the head comes first."""

    def __init__(self, raw: BinaryIO, head: bytes):
        self.raw, self.head = raw, memoryview(head)
        self.digest = Digest()
        self.digest.update(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if self.head:
            count = min(len(target), len(self.head))
            target[:count], self.head = self.head[:count], self.head[count:]
            return count
        data = self.raw.read(len(target))
        target[: len(data)] = data
        self.digest.update(data)
        return len(data)


@dataclass
class ArchiveStream:
    """The uncompressed archive (``data``) of one open source, and what is known about its bytes."""

    data: BinaryIO
    compressed: bool
    encrypted: bool
    _counted: _Counted

    def finish(self) -> Digest:
        """Read the stored bytes the layers above left (after the gzip end); their sha256 and size."""
        while self._counted.readinto(bytearray(_BLOCK)):
            pass
        return self._counted.digest


class _Pin:
    """The bytes of the first read, for every later one: the file kept open, or a spool file."""

    def __init__(self, file: BinaryIO, spool: Path | None):
        self.file, self.spool, self.complete = file, spool, spool is None

    def reader(self) -> BinaryIO:
        """The kept file from its start, with a position of its own (even once renamed or deleted)."""
        self.file.flush()
        return open(f"/proc/self/fd/{self.file.fileno()}", "rb")

    def close(self) -> None:
        self.file.close()
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)


class _Spooling(io.RawIOBase):
    """The first read of a bucket copy: what it returns also goes to the spool."""

    def __init__(self, raw: BinaryIO, pin: _Pin):
        self.raw, self.pin = raw, pin
        pin.file.seek(0)
        pin.file.truncate()  # an earlier first read may have stopped early

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(memoryview(buffer)))
        self.pin.file.write(data)
        self.pin.complete = not data
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()  # a bucket body, whose close never raises (store/s3.py)
        super().close()


class ArchiveSource:
    """The local file of an archive (``path``); ``BucketSource`` is the bucket's copy."""

    location = LOCAL

    def __init__(self, path: Path, *, identity_file: str = ""):
        self.path, self.identity_file = Path(path), identity_file  # SIDECAR_AGE_IDENTITY_FILE
        self._pin: _Pin | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path)

    describe = __str__  # how messages name the copy (a bucket's names its object)

    def _open_raw(self) -> BinaryIO:
        return open(self.path, "rb")

    def open_stored(self) -> BinaryIO:
        """The stored bytes (still encrypted for age archives); ArchiveReadError if there are none."""
        pin = self._pin
        if pin is not None and pin.complete:
            return pin.reader()
        try:
            raw = self._open_raw()
        except FileNotFoundError:
            raise ArchiveReadError(f"{self.path} does not exist", "file") from None
        except OSError as exc:
            raise ArchiveReadError(f"cannot open {self.path}: {exc.strerror or exc}", "file") from None
        except StoreError as exc:
            raise ArchiveReadError(str(exc), "file") from None
        return raw if pin is None else _Spooling(raw, pin)  # type: ignore[return-value]

    def _pin_now(self) -> _Pin:
        return _Pin(self.open_stored(), None)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[ArchiveSource]:
        """Every ``open()`` inside reads the bytes the first one read (see the module's note)."""
        pin = self._pin = self._pin_now()
        try:
            yield self
        finally:
            self._pin = None
            pin.close()

    @contextlib.contextmanager
    def open(self) -> Iterator[ArchiveStream]:
        """The uncompressed archive stream (gzip, plain, or age-encrypted gzip in the store)."""
        raw = self.open_stored()
        try:
            head = raw.read(len(AGE_MAGIC))
            kind = sniff(head)
            counted = _Counted(raw, head)
            if kind == "archive":
                yield ArchiveStream(io.BufferedReader(counted, _BLOCK), False, False, counted)
                return
            source: Any = counted
            if kind == "age":
                source = self._decrypting(counted)
            # Decompression runs in its own thread (ISA-L releases the GIL) while the caller parses.
            with igzip_threaded.open(source, "rb", threads=1, block_size=2 << 20) as stream:
                yield ArchiveStream(stream, True, kind == "age", counted)
        finally:
            raw.close()

    def _decrypting(self, counted: _Counted) -> BinaryIO:
        """The one place age identities are loaded for reading: named in messages, never shown."""
        if not self.identity_file:
            raise ArchiveReadError(
                f"{self.name} is age-encrypted: set {IDENTITY_SETTING} to an identity that can decrypt it",
                "file",
            )
        try:
            keys = load_identities(self.identity_file)
        except EncryptionError as exc:
            raise ArchiveReadError(str(exc), "file") from None
        label = f"{IDENTITY_SETTING} ({self.identity_file})"
        return decrypt_reader(counted, keys, source=self.describe(), keys=label)  # type: ignore[arg-type]


class BucketSource(ArchiveSource):
    """The bucket's copy of an archive whose local file is gone; pinned, it is spooled to disk."""

    location = S3

    def __init__(self, path: Path, bucket: S3Backend, *, identity_file: str = ""):
        super().__init__(path, identity_file=identity_file)
        self.bucket = bucket

    def describe(self) -> str:
        return f"{self.name} (s3://{self.bucket.bucket}/{self.bucket.key(self.name)})"

    def _open_raw(self) -> BinaryIO:
        return self.bucket.open(self.name)

    def _pin_now(self) -> _Pin:
        spool = self.path.with_name(f".{self.name}.spool{PARTIAL_SUFFIX}")
        return _Pin(os.fdopen(os.open(spool, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "w+b"), spool)


def source_for(
    settings: Settings,
    path: Path,
    entry: Entry | None = None,
    bucket: Callable[[Settings], S3Backend] | None = None,
) -> ArchiveSource:
    """The copy verify, drills and restores read: the local file when it is there (or the entry is
    not in the bucket), else the bucket's copy; decrypted with ``SIDECAR_AGE_IDENTITY_FILE``. The
    sha256 of what is read is compared with the catalog's by the integrity checks, not here.
    ``bucket``: the backend that holds this kind of object (default: the archives')."""
    path, keys = Path(path), settings.age_identity_file
    in_bucket = entry is not None and S3 in (entry.get("locations") or [LOCAL]) and settings.s3_bucket
    if path.is_file() or not in_bucket:
        return ArchiveSource(path, identity_file=keys)
    if bucket is None:
        from sidecar.store.s3 import S3Backend

        bucket = S3Backend.from_settings
    return BucketSource(path, bucket(settings), identity_file=keys)
