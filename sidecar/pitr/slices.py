"""Slices: runs of raw oplog entries, in cursor order, stored as one gzip'd ``.bson`` stream each.

A slice file is what ``bsondump`` and ``mongorestore --oplogReplay --oplogFile`` read once gunzipped
(``.bson.gz``; ``.bson.gz.age`` when ``SIDECAR_AGE_RECIPIENTS`` is set), named by its first and last
entry: ``oplog-{t1}.{i1}-{t2}.{i2}.bson.gz``. A slice never ends inside a group of entries that share
one timestamp (the entries of one transaction on the embedded server), so "every entry with ts <= the
last stored one is stored" holds after any stop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.engine.compression import gzip_reader, gzip_writer
from sidecar.engine.encryption import AgeWriter, decrypt_reader, load_identities, parse_recipients
from sidecar.pitr import optime
from sidecar.store.catalog import PARTIAL_SUFFIX, iso_utc
from sidecar.store.jsonfile import fsync_dir

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
    """Store the buffer's entries as a slice file (atomically) and return its catalog entry."""
    assert buffer.first is not None and buffer.last is not None
    directory = oplog_dir(settings)
    name = slice_name(buffer.first, buffer.last, encrypted=bool(settings.age_recipients))
    size, sha256 = _store(settings, directory / name, [e.raw for e in buffer.entries])
    return buffer.entry(name, size, sha256)


class _Hashing:
    def __init__(self, raw: BinaryIO):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _store(settings: Settings, final: Path, raws: list[bytes]) -> tuple[int, str]:
    partial = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as raw:
            hashing = _Hashing(raw)
            recipients = parse_recipients(settings.age_recipients) if settings.age_recipients else None
            age = AgeWriter(hashing, recipients) if recipients else None  # type: ignore[arg-type]
            gz = gzip_writer(age or hashing, settings.compression, settings.compression_level)  # type: ignore[arg-type]
            for data in raws:
                gz.write(data)
            gz.close()
            if age is not None:
                age.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(final.parent)
    return hashing.size, hashing.sha256.hexdigest()


def read_entries(settings: Settings, path: Path) -> Iterator[bytes]:
    """The raw entries of a slice file, in order."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SliceError(f"cannot open {path}: {exc.strerror}") from None
    try:
        source: BinaryIO = raw
        if path.name.endswith(ENCRYPTED_SUFFIX):
            source = decrypt_reader(raw, load_identities(settings.age_identity_file), source=path.name)
        yield from bson_stream(gzip_reader(source))
    except (OSError, EOFError) as exc:
        raise SliceError(f"{path.name}: {exc}") from None
    finally:
        raw.close()


def bson_stream(stream: BinaryIO) -> Iterator[bytes]:
    """The documents of a ``.bson`` stream (what mongodump writes and bsondump reads)."""
    while head := stream.read(4):
        if len(head) < 4:
            raise SliceError("the BSON stream ends inside a document's length")
        (length,) = struct.unpack("<i", head)
        body = stream.read(length - 4) if length >= 5 else b""
        if length < 5 or len(body) != length - 4 or body[-1:] != b"\x00":
            raise SliceError(f"a document of {length} bytes is cut short or malformed")
        yield head + body


def stored_digest(path: Path) -> str:
    """The sha256 of the stored bytes of a slice file, as its catalog entry records it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
