"""``oplog/oplog-slices.jsonl``: the record of the oplog archive (``backup-info.json`` stays the list of
backups), kept as an append-only log of JSON lines, so cutting a slice appends one short line instead
of rewriting a document that grows to tens of megabytes over a retention period. Each line is one
change (fields: docs/pitr.md)::

    {"op": "slice", "slice": {...}}                 # a new slice, newest last
    {"op": "gap", "gap": {...}}                     # a gap found while archiving (a rollover on resume)
    {"op": "set", "fileName": n, "fields": {...}}   # fields of a slice changed (its bucket copy)
    {"op": "drop", "files": {n: [dest, ...]}}       # retention: these copies go (catalog first)
    {"op": "done", "files": {n: [dest, ...]}}       # retention: those copies are gone
    {"op": "forget-gaps", "before": {"t", "i"}}     # retention: gaps that end at or before this point
    {"op": "verify", "level": l, "result": {...}}   # the newest check of the slices at level l (pitr)

Replaying the lines gives the document ``{"slices": [...], "gaps": [...], "deleting": {n: [dest]}}``.
A slice whose every copy is dropped leaves ``slices`` (the chain no longer holds it) and stays in
``deleting`` until its copies are gone, so a crash between the two never leaves a catalog entry
without its file. Appends are made under an exclusive lock, fsync'd; a last line torn by a crash is
ignored (and cut off by the next append). ``compact()`` (run by the prune) rewrites the log as one
line per slice and gap, atomically. A process parses only the lines added since its last read.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson.timestamp import Timestamp

from sidecar.pitr import optime
from sidecar.pitr.record.slices import SliceEntry
from sidecar.store.catalog import CatalogError
from sidecar.store.filelock import FileLock
from sidecar.store.jsonfile import LockedJsonFile, fsync_dir

SLICES_NAME = "oplog-slices.jsonl"
LEGACY_NAME = "oplog-slices.json"  # the single-document catalog of before: converted on first read
ARCHIVER_LOCK = ".archiver.lock"

GapEntry = dict[str, Any]
Document = dict[str, Any]


_CACHES: dict[Path, tuple[int, int, Document]] = {}
_CACHE_LOCK = threading.RLock()


class ArchiverBusy(RuntimeError):
    """Another archiver (a ``sidecar serve`` or ``sidecar pitr stream``) writes this directory."""


def _empty() -> Document:
    return {"slices": [], "gaps": [], "deleting": {}, "verification": {}}


def _apply(document: Document, record: dict[str, Any]) -> None:
    op = record.get("op")
    if op == "slice":
        document["slices"].append(record["slice"])
    elif op == "gap":
        document["gaps"].append(record["gap"])
    elif op == "set":
        slices = document["slices"]
        for index, entry in enumerate(slices):
            if entry["fileName"] == record["fileName"]:
                slices[index] = {**entry, **record["fields"]}  # a new dict: earlier readers keep theirs
    elif op == "drop":
        _drop(document, record["files"])
    elif op == "done":
        deleting = document["deleting"]
        for name, gone in record["files"].items():
            left = [d for d in deleting.get(name, []) if d not in gone]
            if left:
                deleting[name] = left
            else:
                deleting.pop(name, None)
    elif op == "verify":
        document["verification"] = {**document["verification"], record["level"]: record["result"]}
    elif op == "forget-gaps":
        before = optime.from_json(record["before"])
        gaps = document["gaps"]
        document["gaps"] = [g for g in gaps if not g.get("to") or optime.from_json(g["to"]) > before]
    else:
        raise CatalogError(f"unknown change {op!r} in the slice catalog")


def _drop(document: Document, files: dict[str, list[str]]) -> None:
    deleting = document["deleting"]
    for name, going in files.items():
        deleting[name] = sorted(set(deleting.get(name, [])) | set(going))
    kept = []
    for entry in document["slices"]:
        going = files.get(entry["fileName"])
        if going is None:
            kept.append(entry)
            continue
        where = [d for d in entry.get("locations") or ["local"] if d not in going]
        if where:
            remote = {d: r for d, r in (entry.get("remote") or {}).items() if d not in going}
            kept.append({**entry, "locations": where, "remote": remote})
    document["slices"] = kept


def _write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    """A temporary file beside ``path`` holding ``records`` as JSON lines, fsync'd."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


class SliceCatalog:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / SLICES_NAME
        self._lock = LockedJsonFile(self.path, CatalogError)  # its lock file only

    @property
    def _cache(self) -> tuple[int, int, Document] | None:
        """(inode, bytes parsed, document), shared by the catalog objects of this process."""
        return _CACHES.get(self.path)

    @_cache.setter
    def _cache(self, value: tuple[int, int, Document] | None) -> None:
        if value is None:
            _CACHES.pop(self.path, None)
        else:
            _CACHES[self.path] = value

    # -- reading ---------------------------------------------------------------------------------

    def load(self) -> Document:
        """The document (its lists are the caller's to keep; the entries are shared, never changed)."""
        document = self._read()
        return {
            "slices": list(document["slices"]),
            "gaps": list(document["gaps"]),
            "deleting": dict(document["deleting"]),
            "verification": dict(document["verification"]),
        }

    def slices(self) -> list[SliceEntry]:
        return self.load()["slices"]

    def last_position(self) -> Timestamp | None:
        """The newest stored entry: the archiver resumes after it."""
        slices = self._read()["slices"]
        return optime.from_json(slices[-1]["last"]) if slices else None

    def _read(self) -> Document:
        with _CACHE_LOCK:  # the archiver's thread appends while status and metrics read
            return self._read_new_lines()

    def _read_new_lines(self) -> Document:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            self._cache = None
            if self._convert_legacy():
                return self._read_new_lines()
            return _empty()
        except OSError as exc:
            raise CatalogError(f"cannot read {self.path}: {exc.strerror}") from None
        with handle:
            inode = os.fstat(handle.fileno()).st_ino
            cached = self._cache
            if cached is None or cached[0] != inode:
                cached = (inode, 0, _empty())
            offset, document = cached[1], cached[2]
            handle.seek(offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line (a crash mid-append) is not a change
        for number, line in enumerate(complete.splitlines(), 1):
            if not line.strip():
                continue
            try:
                _apply(document, json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                self._cache = None
                raise CatalogError(
                    f"{self.path}: change {number} after byte {offset} is not valid ({exc})"
                ) from None
        self._cache = (inode, offset + len(complete), document)
        return document

    def _convert_legacy(self) -> bool:
        """``oplog-slices.json`` (one document) becomes the log, created only if absent (a link, so
        two processes converting at once make one log); the old file is renamed ``….migrated``."""
        legacy = self.directory / LEGACY_NAME
        if not legacy.is_file():
            return False
        document = LockedJsonFile(legacy, CatalogError).read(_empty())
        lines = [{"op": "slice", "slice": s} for s in document.get("slices", [])]
        lines += [{"op": "gap", "gap": g} for g in document.get("gaps", [])]
        tmp = _write_lines(self.path, lines)
        try:
            os.link(tmp, self.path)
            os.replace(legacy, legacy.with_name(f"{LEGACY_NAME}.migrated"))
        except FileExistsError:
            pass  # another process converted it
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.directory)
        return True

    # -- writing ---------------------------------------------------------------------------------

    def _append(self, *records: dict[str, Any], check: Any = None) -> None:
        """Append changes under the lock; ``check(document)`` may refuse them first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock.locked():
            document = self._read()
            if check is not None:
                check(document)
            with open(self.path, "ab") as handle:
                end = self._cache[1] if self._cache else 0
                if handle.tell() != end:
                    handle.truncate(end)  # cut off a torn line
                handle.write(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
                handle.flush()
                os.fsync(handle.fileno())
            if end == 0:
                fsync_dir(self.directory)
        self._read()

    def add_slice(self, entry: SliceEntry) -> None:
        """Append a slice; refused unless it joins the newest one (or says it does not: prev=None)."""

        def check(document: Document) -> None:
            slices = document["slices"]
            newest = slices[-1]["last"] if slices else None
            if slices and entry["prev"] is not None and entry["prev"] != newest:
                raise CatalogError(
                    f"{entry['fileName']} follows {entry['prev']} but the newest slice ends at {newest}: "
                    f"is a second archiver writing {self.directory}?"
                )

        self._append({"op": "slice", "slice": entry}, check=check)

    def add_gap(self, gap: GapEntry) -> None:
        self._append({"op": "gap", "gap": gap})

    def set_fields(self, file_name: str, **fields: Any) -> None:
        self._append({"op": "set", "fileName": file_name, "fields": fields})

    def record_verification(self, level: str, result: dict[str, Any]) -> None:
        """The newest result of a check of the archive's content (``verification.<level>``: the pitr
        level's replay from one base backup to the next), kept beside the slices it read."""
        self._append({"op": "verify", "level": level, "result": result})

    def mark_dropped(self, files: dict[str, list[str]], gaps_before: Timestamp | None = None) -> None:
        """Retention, before any copy is deleted: the copies leave the catalog and are marked."""
        records: list[dict[str, Any]] = [{"op": "drop", "files": files}]
        if gaps_before is not None:
            records.append({"op": "forget-gaps", "before": optime.as_json(gaps_before)})
        self._append(*records)

    def mark_done(self, files: dict[str, list[str]]) -> None:
        """Retention, after the copies went: their marks go."""
        self._append({"op": "done", "files": files})

    def compact(self) -> None:
        """Rewrite the log as the document it replays to (one line per slice and gap), atomically."""
        if not self.path.exists():
            return
        with self._lock.locked():
            document = self._read()
            lines = [{"op": "slice", "slice": s} for s in document["slices"]]
            lines += [{"op": "gap", "gap": g} for g in document["gaps"]]
            if document["deleting"]:  # copies still to delete: marked again
                lines.append({"op": "drop", "files": dict(document["deleting"])})
            lines += [{"op": "verify", "level": k, "result": v} for k, v in document["verification"].items()]
            os.replace(_write_lines(self.path, lines), self.path)
            fsync_dir(self.directory)
            self._cache = None
        self._read()

    @contextlib.contextmanager
    def archiver_lock(self) -> Iterator[None]:
        """Held while an archiver runs: a second one (here or in another process) is refused."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.directory / ARCHIVER_LOCK)
        if not lock.acquire(wait=False):
            holder = lock.holder().strip() or "?"
            raise ArchiverBusy(f"another oplog archiver (pid {holder}) is writing {self.directory}")
        try:
            lock.record(str(os.getpid()))
            yield
        finally:
            lock.release()
