"""Off-site copies and encryption, as the backup service uses them; the catalog stays the record.

- ``sink()``: the ArchiveSink (store/sink.py) a new archive is written through: age encryption when
  SIDECAR_AGE_RECIPIENTS is set, and in ``streaming`` upload mode a tee that also feeds an S3
  multipart upload as bytes are produced. A failing upload never fails the local backup: the tee
  drops it and the archive is uploaded from the local file later.
- ``copy()``: after a completed backup, finish its upload (streaming) or upload the file (after-write),
  then retry earlier archives that the bucket's retention wants but lacks; an archive gets the ``s3``
  location only after the object's size and sha256 check out. Also reconciles the catalog with a
  listing of the bucket (missing objects, strays), and reports per destination in the job result.
- ``plan()`` / ``apply()``: tiered retention on every destination (store/retention.py).
- ``recover()``: aborts multipart uploads left unfinished by a killed process.

Catalog fields written here (per archive entry):
  ``locations``      ["local"], ["s3"] or ["local", "s3"]
  ``remote.s3``      {key, bucket, sizeBytes, sha256, etag, uploadedAt}; set only after a checked upload
  ``uploadErrors.s3`` {error, at, attempts} after a failed upload; removed by the next success
Job result (``job.result["uploads"]["s3"]``): {ok, bytes, at (epoch s), files, retried, error?,
  reconcile: {missing, stray}}.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar import clock
from sidecar.codec.age_stream import parse_recipients
from sidecar.store.catalog import STATUS_COMPLETED, Catalog, Entry, find_entry
from sidecar.store.objects import LOCAL, S3, ObjectInfo, StoreError
from sidecar.store.retention import Policy, Removal, locations, plan, upload_candidates
from sidecar.store.sink import ArchiveSink
from sidecar.store.storage import STOP_KINDS, places, remove_copies
from sidecar.text import iso_utc
from sidecar.time_input import parse_iso

if TYPE_CHECKING:
    from sidecar.config import Settings
    from sidecar.store.s3 import S3Backend, S3Upload

log = logging.getLogger("sidecar.store.offsite")


# Policy field -> its setting; the bucket's is the same name with s3_ in front.
_POLICY_SETTINGS = {
    "days": "retention_days",
    "keep_last": "retention_min_count",
    "daily": "retention_keep_daily",
    "weekly": "retention_keep_weekly",
    "monthly": "retention_keep_monthly",
    "max_age_days": "retention_max_age_days",
}


def policies(settings: Settings) -> dict[str, Policy]:
    """Retention per configured destination; each SIDECAR_S3_RETENTION_* falls back to the local one."""
    local = Policy(**{field: getattr(settings, name) for field, name in _POLICY_SETTINGS.items()})
    found = {LOCAL: local}
    if settings.s3_bucket:
        bucket = {field: getattr(settings, f"s3_{name}") for field, name in _POLICY_SETTINGS.items()}
        found[S3] = replace(local, **{field: v for field, v in bucket.items() if v is not None})
    return found


class Offsite:
    def __init__(self, settings: Settings, catalog: Catalog):
        self.settings, self.catalog = settings, catalog
        self._s3: S3Backend | None = None
        self._streaming: dict[str, S3Upload] = {}  # streaming uploads waiting for copy()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.s3_bucket)

    @property
    def encrypting(self) -> bool:
        return bool(self.settings.age_recipients)

    @property
    def suffix(self) -> str:
        """Appended to new archive names: ``.age`` when encrypting (the file is an age file)."""
        return ".age" if self.encrypting else ""

    @property
    def s3(self) -> S3Backend:
        if self._s3 is None:
            from sidecar.store.s3 import S3Backend

            self._s3 = S3Backend.from_settings(self.settings)
        return self._s3

    def _bucket(self) -> Callable[[], S3Backend] | None:
        return (lambda: self.s3) if self.enabled else None

    # -- writing ---------------------------------------------------------------------------------

    def sink(self, final: Path) -> ArchiveSink:
        """The sink a new archive is written through (see the module's note)."""
        settings = self.settings
        recipients = parse_recipients(settings.age_recipients) if self.encrypting else None
        tee = None
        if self.enabled and settings.s3_upload_mode == "streaming":
            try:
                tee = self._streaming[final.name] = self.s3.writer(final.name)
            except StoreError as exc:
                log.warning("streaming upload of %s not started: %s", final.name, exc)
        return ArchiveSink(
            final,
            recipients=recipients,
            compression=settings.compression,
            level=settings.compression_level,
            tee=tee,
        )

    def discard(self, name: str) -> None:
        """The backup of ``name`` failed after its dump: drop a waiting streaming upload."""
        upload = self._streaming.pop(name, None)
        if upload is not None:
            upload.abort()

    # -- recovery --------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Abort unfinished multipart uploads under the prefix (call under the job lock)."""
        for name in list(self._streaming):
            self.discard(name)
        if not self.enabled:
            return []
        try:
            aborted = self.s3.abort_stale_uploads()
        except StoreError as exc:
            log.warning("could not look for unfinished uploads: %s", exc)
            return []
        return [f"unfinished upload {key}" for key in aborted]

    # -- uploading -------------------------------------------------------------------------------

    def copy(self, result: dict[str, Any], entry: Entry | None) -> str | None:
        """Upload ``entry`` (just completed) and retry pending ones; None, or what failed."""
        if not self.enabled:
            return None
        s3 = self.s3
        outcome: dict[str, Any] = {
            "ok": True,
            "bytes": 0,
            "at": clock.timestamp(),
            "files": [],
            "retried": [],
        }
        result.setdefault("uploads", {})[S3] = outcome
        try:
            s3.check()
            listing = {o.name: o for o in s3.list()}
        except StoreError as exc:
            if entry is not None:
                self.discard(entry["fileName"])
                self._record_failure(entry["fileName"], exc)
            outcome.update(ok=False, error=str(exc), at=clock.timestamp())
            return self._failure_message(entry, [str(exc)])
        entries = self.catalog.load()
        outcome["reconcile"] = self.reconcile(entries, listing)
        todo = self._todo(entries, entry, set(outcome["reconcile"]["missing"]))
        errors: list[str] = []
        for item in todo:
            name = item["fileName"]
            try:
                info = self._upload_one(item)
            except StoreError as exc:
                errors.append(f"{name}: {exc}")
                self._record_failure(name, exc)
                if exc.kind in STOP_KINDS:
                    break
                continue
            self._record_success(name, info)
            outcome["bytes"] += info.size
            outcome["files"].append(name)
            if entry is None or name != entry["fileName"]:
                outcome["retried"].append(name)
        for name in list(self._streaming):
            self.discard(name)
        outcome["at"] = clock.timestamp()
        if outcome["retried"]:
            log.info(
                "uploaded earlier archives missing from %s: %s", s3.describe(), ", ".join(outcome["retried"])
            )
        if errors:
            outcome.update(ok=False, error="; ".join(errors))
            return self._failure_message(entry, errors)
        return None

    def _failure_message(self, entry: Entry | None, errors: list[str]) -> str:
        what = f"{entry['fileName']} was written locally, but " if entry is not None else ""
        return (
            f"{what}upload to {self.s3.describe()} failed: {'; '.join(errors)}; "
            f"the local archive is intact and the upload is retried on the next backup run"
        )

    def _todo(self, entries: list[Entry], entry: Entry | None, missing: set[str]) -> list[Entry]:
        """The new archive first, then earlier ones the bucket should hold but does not, oldest first."""
        now = clock.now()
        wanted = upload_candidates(entries, now, S3, policies(self.settings)[S3], self.settings.timezone)
        lost = [
            e
            for e in entries
            if e["fileName"] in missing and (self.settings.backup_dir / e["fileName"]).is_file()
        ]
        todo: list[Entry] = []
        if entry is not None and entry.get("status") == STATUS_COMPLETED:
            todo.append(find_entry(entries, entry["fileName"]) or entry)
        seen = {e["fileName"] for e in todo}
        for item in sorted(wanted + lost, key=lambda e: parse_iso(e["createdAt"])):
            if item["fileName"] not in seen:
                seen.add(item["fileName"])
                todo.append(item)
        return todo

    def _upload_one(self, entry: Entry) -> ObjectInfo:
        name = entry["fileName"]
        upload = self._streaming.pop(name, None)
        if upload is not None and upload.error is None:
            return upload.commit(expected_size=entry.get("sizeBytes"), expected_sha256=entry.get("sha256"))
        path = self.settings.backup_dir / name
        if not path.is_file():
            raise StoreError(f"the local file {path} is gone, nothing to upload", LOCAL, "missing")
        return self.s3.put_file(name, path, expected_sha256=entry.get("sha256"))

    def _record_success(self, name: str, info: ObjectInfo) -> None:
        record = remote_record(self.s3, info)

        def change(entries: list[Entry]) -> None:
            found = find_entry(entries, name)
            if found is None:
                return
            where = locations(found)
            if S3 not in where:
                where.append(S3)
            found["locations"] = where
            found.setdefault("remote", {})[S3] = record
            errors = found.get("uploadErrors") or {}
            errors.pop(S3, None)
            if errors:
                found["uploadErrors"] = errors
            else:
                found.pop("uploadErrors", None)

        self.catalog.update(change)
        log.info("uploaded %s to %s (%d bytes, sha256 checked)", name, self.s3.describe(), info.size)

    def _record_failure(self, name: str, exc: StoreError) -> None:
        def change(entries: list[Entry]) -> None:
            found = find_entry(entries, name)
            if found is None:
                return
            errors = found.setdefault("uploadErrors", {})
            previous = errors.get(S3) or {}
            errors[S3] = {
                "error": str(exc),
                "at": iso_utc(clock.now()),
                "attempts": previous.get("attempts", 0) + 1,
            }

        self.catalog.update(change)
        log.warning("upload of %s failed: %s", name, exc)

    # -- reconciliation --------------------------------------------------------------------------

    def reconcile(self, entries: list[Entry], listing: dict[str, ObjectInfo]) -> dict[str, list[str]]:
        """``missing``: the catalog says s3 but the object is absent or has another size; ``stray``:
        archive objects of this file prefix that the catalog does not place in s3. Reported, not fixed
        (a missing object with a local file is uploaded again by ``copy``)."""
        in_s3 = {e["fileName"]: e for e in entries if S3 in locations(e)}
        missing = sorted(
            name
            for name, e in in_s3.items()
            if name not in listing
            or listing[name].size
            != ((e.get("remote") or {}).get(S3) or {}).get("sizeBytes", listing[name].size)
        )
        stray = sorted(n for n in listing if n not in in_s3)  # the listing holds our archives only
        if missing or stray:
            log.warning(
                "catalog and %s disagree: missing %s, stray %s",
                self.s3.describe(),
                ", ".join(missing) or "none",
                ", ".join(stray) or "none",
            )
        return {"missing": missing, "stray": stray}

    # -- retention -------------------------------------------------------------------------------

    def plan(self, entries: list[Entry], now: dt.datetime) -> list[Removal]:
        """Tiered retention's removals, and the copies an interrupted deletion left behind."""
        planned = plan(entries, now, policies(self.settings), self.settings.timezone)
        seen = {(r.file_name, r.destination) for r in planned}
        for entry in entries:
            for d in entry.get("deleting") or []:
                if (entry["fileName"], d) not in seen:
                    why = "finishing a deletion that was interrupted"
                    planned.append(
                        Removal(entry["fileName"], entry.get("status", ""), entry["createdAt"], why, d)
                    )
        return planned

    def apply(self, removals: list[Removal]) -> list[Removal]:
        """Remove the planned copies: the catalog first (the copies marked as being deleted, no longer
        listed as locations), the copies second, then the marks of those removed. A copy that cannot
        be removed (store down) stays marked and is retried by the next prune."""
        if not removals:
            return []
        self.catalog.update(lambda entries: _mark_deleting(entries, removals))
        done = remove_copies(removals, places(self.settings.backup_dir, self._bucket()), log)
        gone = {(r.file_name, r.destination) for r in done}
        self.catalog.update(lambda entries: _finish_deleting(entries, gone))
        if done:
            log.info(
                "retention removed %d archive copies: %s",
                len(done),
                ", ".join(f"{r.file_name} ({r.destination})" for r in done),
            )
        return done


def remote_record(bucket: S3Backend, info: ObjectInfo) -> dict[str, Any]:
    """The ``remote.s3`` record of a checked upload (archives and oplog slices)."""
    return {
        "key": info.key,
        "bucket": bucket.bucket,
        "sizeBytes": info.size,
        "sha256": info.sha256,
        "etag": info.etag,
        "uploadedAt": iso_utc(clock.now()),
    }


STATUS_DELETING = "deleting"  # every copy of the archive is being removed: not usable, never restored


def _mark_deleting(entries: list[Entry], removals: list[Removal]) -> None:
    """Before any copy goes: the catalog stops listing it, and says which copies are being deleted."""
    going: dict[str, set[str]] = {}
    for r in removals:
        going.setdefault(r.file_name, set()).add(r.destination)
    for entry in entries:
        dropped = going.get(entry["fileName"])
        if not dropped:
            continue
        entry["deleting"] = sorted(set(entry.get("deleting") or []) | dropped)
        where = [d for d in locations(entry) if d not in dropped]
        if not where or entry.get("status") != STATUS_COMPLETED:
            entry["status"] = STATUS_DELETING
            continue
        entry["locations"] = where
        remote = {d: record for d, record in (entry.pop("remote", None) or {}).items() if d not in dropped}
        if remote:
            entry["remote"] = remote


def _finish_deleting(entries: list[Entry], gone: set[tuple[str, str]]) -> None:
    """After the copies went: their marks go; an entry whose every copy is gone leaves the catalog."""
    kept = []
    for entry in entries:
        pending = [d for d in entry.get("deleting") or [] if (entry["fileName"], d) not in gone]
        if pending:
            entry["deleting"] = pending
        else:
            entry.pop("deleting", None)
            if entry.get("status") == STATUS_DELETING:
                continue
        kept.append(entry)
    entries[:] = kept
