"""Slices: runs of raw oplog entries, in cursor order, stored as one gzip'd ``.bson`` stream each.

A slice file is what ``bsondump`` and ``mongorestore --oplogReplay --oplogFile`` read once gunzipped
(``.bson.gz``; ``.bson.gz.age`` when ``SIDECAR_AGE_RECIPIENTS`` is set), named by its first and last
entry: ``oplog-{t1}.{i1}-{t2}.{i2}.bson.gz``. A slice never ends inside a group of entries that share
one timestamp (the entries of one transaction on the embedded server), so "every entry with ts <= the
last stored one is stored" holds after any stop.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.archive.bsonstream import MAX_OPLOG_ENTRY_SIZE, CutDocument, read_documents
from sidecar.codec.age_stream import parse_recipients
from sidecar.config import Settings
from sidecar.pitr import optime
from sidecar.store.sink import ArchiveSink
from sidecar.store.source import ArchiveSource, read_failure, source_for
from sidecar.text import iso_utc

if TYPE_CHECKING:
    from sidecar.store.s3 import S3Backend

OPLOG_DIR = "oplog"  # under SIDECAR_BACKUP_DIR, and under SIDECAR_S3_PREFIX in the bucket
SLICE_PREFIX = "oplog-"
SLICE_SUFFIX = ".bson.gz"
ENCRYPTED_SUFFIX = ".age"
SLICE_NAME = re.compile(r"oplog-\d+\.\d+-\d+\.\d+\.bson\.gz(\.age)?")

MAX_ENTRY_BYTES = MAX_OPLOG_ENTRY_SIZE  # an oplog entry may exceed a document's limit a little
SliceEntry = dict[str, Any]  # one slice in oplog-slices.jsonl (see docs/pitr.md)


class SliceError(RuntimeError):
    """A slice cannot be read back: missing, undecryptable, truncated or not a BSON stream."""


def oplog_dir(settings: Settings) -> Path:
    return settings.backup_dir / OPLOG_DIR


def slice_name(first: Timestamp, last: Timestamp, encrypted: bool = False) -> str:
    name = f"{SLICE_PREFIX}{optime.label(first)}-{optime.label(last)}{SLICE_SUFFIX}"
    return name + ENCRYPTED_SUFFIX if encrypted else name


@dataclass
class SliceBuffer:
    """The entries of the slice being cut. ``prev`` is the entry before the first (None: not joined)."""

    prev: Timestamp | None
    # raw bytes, not the documents: reading "wall" and "ns" decodes a document's fields into Python
    # objects, which a whole slice of small entries holds at several times its 16 MiB
    entries: list[bytes] = field(default_factory=list)
    stamps: list[Timestamp] = field(default_factory=list)
    first_wall: dt.datetime | None = None
    last_wall: dt.datetime | None = None
    namespaces: Counter[str] = field(default_factory=Counter)
    raw_bytes: int = 0
    started: float = 0.0  # monotonic time of the first entry
    # entries of the proofs' scratch databases the slice leaves out (engine/scratch_names.py): those
    # within its range, and those after its newest entry (within the next range once one follows)
    left_out: int = 0
    left_out_after: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def first(self) -> Timestamp | None:
        return self.stamps[0] if self.stamps else None

    @property
    def last(self) -> Timestamp | None:
        return self.stamps[-1] if self.stamps else None

    def add(self, entry: RawBSONDocument, ts: Timestamp) -> None:
        if not self.entries:
            self.first_wall, self.started = entry.get("wall"), time.monotonic()
        self.entries.append(entry.raw)
        self.stamps.append(ts)
        self.last_wall = entry.get("wall") or self.last_wall
        self.namespaces[entry.get("ns") or ""] += 1
        self.raw_bytes += len(entry.raw)
        self.left_out, self.left_out_after = self.left_out + self.left_out_after, 0

    def leave_out(self, ts: Timestamp) -> None:
        """An entry of a proof's scratch database at ``ts``: not stored, only counted."""
        if ts == self.last:
            self.left_out += 1
        else:
            self.left_out_after += 1

    def next(self) -> SliceBuffer:
        """The buffer after this one is stored: joined to it, with the entries left out after it."""
        return SliceBuffer(prev=self.last, left_out_after=self.left_out_after)

    def without_last_group(self) -> SliceBuffer:
        """The same entries but those sharing the newest timestamp (a group that may be incomplete)."""
        kept = SliceBuffer(self.prev, left_out_after=self.left_out)  # those of the group too, at most
        for raw, ts in zip(self.entries, self.stamps, strict=True):
            if ts != self.last:
                kept.add(RawBSONDocument(raw), ts)
        return kept

    def age(self) -> float:
        return time.monotonic() - self.started if self.entries else 0.0

    def entry(self, file_name: str, size: int, sha256: str) -> SliceEntry:
        assert self.first is not None and self.last is not None
        return {
            "fileName": file_name,
            "first": optime.as_json(self.first),
            "last": optime.as_json(self.last),
            "prev": optime.as_json(self.prev) if self.prev is not None else None,
            "entries": len(self.entries),
            "rawBytes": self.raw_bytes,
            "sizeBytes": size,
            "sha256": sha256,
            "namespaces": dict(sorted(self.namespaces.items())),
            "leftOut": self.left_out,
            "firstWall": iso_utc(_utc(self.first_wall)) if self.first_wall else None,
            "lastWall": iso_utc(_utc(self.last_wall)) if self.last_wall else None,
            "createdAt": iso_utc(clock.now()),
            "encrypted": file_name.endswith(ENCRYPTED_SUFFIX),
        }


def _utc(moment: dt.datetime) -> dt.datetime:
    """pymongo decodes BSON dates as naive UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def write_slice(settings: Settings, buffer: SliceBuffer) -> SliceEntry:
    """Store the buffer's entries as a slice file through the archive sink (gzip, age when recipients
    are set, sha256, fsync, rename) and return its catalog entry."""
    assert buffer.first is not None and buffer.last is not None
    recipients = parse_recipients(",".join(settings.age_recipients)) if settings.age_recipients else None
    name = slice_name(buffer.first, buffer.last, encrypted=recipients is not None)
    final = oplog_dir(settings) / name
    with ArchiveSink(
        final, recipients=recipients, compression=settings.compression, level=settings.compression_level
    ) as sink:
        sink.archive.write(b"".join(buffer.entries))
        digest = sink.commit()
    return buffer.entry(name, digest.size, digest.hexdigest())


def slice_bucket(settings: Settings) -> S3Backend:
    """The bucket's slices: ``SIDECAR_S3_PREFIX`` + ``oplog/`` + the slice's file name."""
    from sidecar.store.s3 import S3Backend

    return S3Backend.from_settings(settings, sub_prefix=f"{OPLOG_DIR}/", names=SLICE_NAME)


def slice_source(settings: Settings, path: Path, entry: SliceEntry | None = None) -> ArchiveSource:
    """The slice as the store reads it (decrypted with SIDECAR_AGE_IDENTITY_FILE when ``.age``): the
    local file, or the bucket's copy when the file is gone and ``entry`` places the slice there."""
    return source_for(settings, path, entry, bucket=slice_bucket)


def read_entries(
    settings: Settings, path: Path, entry: SliceEntry | None = None, *, sha256: str | None = None
) -> list[bytes]:
    """The raw entries of a slice, in order (a slice is at most about SIDECAR_PITR_SLICE_MAX_BYTES).
    With ``sha256`` (the catalog's), the stored bytes read must have that digest."""
    return list(iter_entries(settings, path, entry, sha256=sha256))


def iter_entries(
    settings: Settings, path: Path, entry: SliceEntry | None = None, *, sha256: str | None = None
) -> Iterator[bytes]:
    """The raw entries of a slice one at a time, read as they are decompressed (one entry in memory);
    SliceError when the slice cannot be read through or ends inside an entry. The ``sha256`` check
    comes after the last entry: a caller that must not act on unverified entries reads them all first
    (``read_entries``)."""
    try:
        with slice_source(settings, path, entry).open() as stream:
            yield from read_documents(stream.data, MAX_ENTRY_BYTES)
            digest = stream.finish().hexdigest()
    except CutDocument:
        raise SliceError(f"{path.name}: the BSON stream ends inside an entry") from None
    except Exception as exc:
        raise SliceError(f"{path.name}: {read_failure(exc)}") from None
    if sha256 is not None and digest != sha256:
        raise SliceError(f"{path.name}: its sha256 is {digest}, the catalog says {sha256}")
