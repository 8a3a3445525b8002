"""Slices: runs of raw oplog entries, in cursor order, stored as one gzip'd ``.bson`` stream each.

A slice file is what ``bsondump`` and ``mongorestore --oplogReplay --oplogFile`` read once gunzipped
(``.bson.gz``; ``.bson.gz.age`` when ``SIDECAR_AGE_RECIPIENTS`` is set), named by its first and last
entry: ``oplog-{t1}.{i1}-{t2}.{i2}.bson.gz``. A slice never ends inside a group of entries that share
one timestamp (the entries of one transaction on the embedded server), so "every entry with ts <= the
last stored one is stored" holds after any stop.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.archive.reader import split_documents
from sidecar.config import Settings
from sidecar.engine.encryption import parse_recipients
from sidecar.pitr import optime
from sidecar.store.catalog import iso_utc
from sidecar.store.objects import Digest
from sidecar.store.sink import ArchiveSink
from sidecar.store.source import ArchiveSource, read_failure

OPLOG_DIR = "oplog"
SLICE_PREFIX = "oplog-"
SLICE_SUFFIX = ".bson.gz"
ENCRYPTED_SUFFIX = ".age"

SliceEntry = dict[str, Any]  # one slice in oplog-slices.json (see docs/pitr.md)


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
    entries: list[RawBSONDocument] = field(default_factory=list)
    stamps: list[Timestamp] = field(default_factory=list)
    first_wall: dt.datetime | None = None
    last_wall: dt.datetime | None = None
    namespaces: Counter[str] = field(default_factory=Counter)
    raw_bytes: int = 0
    started: float = 0.0  # monotonic time of the first entry

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
        self.entries.append(entry)
        self.stamps.append(ts)
        self.last_wall = entry.get("wall") or self.last_wall
        self.namespaces[entry.get("ns") or ""] += 1
        self.raw_bytes += len(entry.raw)

    def without_last_group(self) -> SliceBuffer:
        """The same entries but those sharing the newest timestamp (a group that may be incomplete)."""
        kept = SliceBuffer(self.prev)
        for entry, ts in zip(self.entries, self.stamps, strict=True):
            if ts != self.last:
                kept.add(entry, ts)
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
            "firstWall": iso_utc(_utc(self.first_wall)) if self.first_wall else None,
            "lastWall": iso_utc(_utc(self.last_wall)) if self.last_wall else None,
            "createdAt": iso_utc(dt.datetime.now(dt.UTC)),
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
        sink.archive.write(b"".join(entry.raw for entry in buffer.entries))
        digest = sink.commit()
    return buffer.entry(name, digest.size, digest.hexdigest())


def slice_source(settings: Settings, path: Path) -> ArchiveSource:
    """The slice file as the store reads it (decrypted with SIDECAR_AGE_IDENTITY_FILE when ``.age``)."""
    return ArchiveSource(path, identity_file=settings.age_identity_file)


def read_entries(settings: Settings, path: Path, sha256: str | None = None) -> list[bytes]:
    """The raw entries of a slice file, in order (a slice is at most about SIDECAR_PITR_SLICE_MAX_BYTES).
    With ``sha256`` (the catalog's), the stored bytes read must have that digest."""
    try:
        with slice_source(settings, path).open() as stream:
            data = stream.data.read()
            digest = stream.finish().hexdigest()
    except Exception as exc:
        raise SliceError(f"{path.name}: {read_failure(exc)}") from None
    if sha256 is not None and digest != sha256:
        raise SliceError(f"{path.name}: its sha256 is {digest}, the catalog says {sha256}")
    entries = [bytes(doc) for doc in split_documents(data)]
    if entries and (len(entries[-1]) < 5 or len(entries[-1]) != int.from_bytes(entries[-1][:4], "little")):
        raise SliceError(f"{path.name}: the BSON stream ends inside an entry")
    return entries


def stored_digest(path: Path) -> str:
    """The sha256 of the stored bytes of a slice file, as its catalog entry records it."""
    digest = Digest()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
