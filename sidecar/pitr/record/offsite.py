"""The oplog slices' copies: uploaded to the bucket (``SIDECAR_S3_PREFIX`` + ``oplog/``) with the same
checked upload as archives, and removed by retention (pitr/record/retention.py) catalog first, copies second.

An upload is recorded in the slice's catalog entry (``locations`` gains ``s3``, ``remote.s3`` as for
archives) only after the object's size and sha256 check out. A removal first takes the copies out of
the catalog (``SliceCatalog.mark_dropped``), then deletes them, then clears the marks; a crash or a
store failure in between leaves marked copies, which the next prune deletes. The prune uploads what
the bucket lacks; with an archiver running, ``SliceUploader`` does so as each slice is cut.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from sidecar import clock
from sidecar.config import Settings
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.retention import Base, needed, oldest_left, plan_slices, retained_bases
from sidecar.pitr.record.slices import oplog_dir, slice_bucket
from sidecar.store.catalog import Catalog, Entry
from sidecar.store.objects import LOCAL, S3, StoreError
from sidecar.store.offsite import policies, remote_record
from sidecar.store.retention import Removal, locations
from sidecar.store.storage import places, remove_copies

log = logging.getLogger("sidecar.pitr.record.offsite")


class SliceCopies:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog = SliceCatalog(oplog_dir(settings))

    def bases(self, entries: list[Entry], now: dt.datetime) -> dict[str, list[Base]]:
        """Destination -> the base backups its archive policy retains."""
        tz = self.settings.timezone
        return {d: retained_bases(entries, now, p, tz) for d, p in policies(self.settings).items()}

    def keep(self, bases: dict[str, list[Base]], now: dt.datetime) -> dict[str, dict[str, str]]:
        slices = self.catalog.slices()
        return {d: needed(slices, b, now, self.settings.pitr_retention_days) for d, b in bases.items()}

    def plan(self, entries: list[Entry], now: dt.datetime) -> list[Removal]:
        bases = self.bases(entries, now)
        return plan_slices(self.catalog.load(), self.keep(bases, now), bases)

    def upload(self, entries: list[Entry], now: dt.datetime) -> dict[str, Any]:
        """Upload the local slices the bucket's retention wants but lacks, oldest first; stops at the
        first failure (the rest wait for the next prune). {files, bytes, error?}."""
        outcome: dict[str, Any] = {"files": [], "bytes": 0}
        if not self.settings.s3_bucket:
            return outcome
        wanted = self.keep(self.bases(entries, now), now).get(S3, {})
        bucket = slice_bucket(self.settings)
        for entry in self.catalog.slices():
            name = entry["fileName"]
            if name not in wanted or S3 in locations(entry) or LOCAL not in locations(entry):
                continue
            try:
                info = bucket.put_file(name, self.catalog.directory / name, expected_sha256=entry["sha256"])
            except StoreError as exc:
                log.warning("upload of slice %s failed: %s", name, exc)
                outcome["error"] = f"{name}: {exc}"
                break
            remote = {**(entry.get("remote") or {}), S3: remote_record(bucket, info)}
            self.catalog.set_fields(name, locations=[*locations(entry), S3], remote=remote)
            outcome["files"].append(name)
            outcome["bytes"] += info.size
        return outcome

    def apply(self, removals: list[Removal], between: Callable[[], None] | None = None) -> list[Removal]:
        """Remove the planned slice copies: catalog first, copies second (``between`` runs in between:
        a hook for the crash test), then the marks of those removed; then the log is compacted."""
        if not removals:
            return []
        going: dict[str, list[str]] = {}
        for r in removals:
            going.setdefault(r.file_name, []).append(r.destination)
        self.catalog.mark_dropped(going, oldest_left(self.catalog.load(), going))
        if between is not None:
            between()
        done = self._delete(removals)
        gone: dict[str, list[str]] = {}
        for r in done:
            gone.setdefault(r.file_name, []).append(r.destination)
        self.catalog.mark_done(gone)
        self.catalog.compact()
        if done:
            log.info("retention removed %d oplog slice copies", len(done))
        return done

    def _delete(self, removals: list[Removal]) -> list[Removal]:
        bucket = (lambda: slice_bucket(self.settings)) if self.settings.s3_bucket else None
        return remove_copies(removals, places(self.catalog.directory, bucket), log, "slice ")


class SliceUploader:
    """Uploads new slices soon after they are cut, so the bucket trails the archive by seconds rather
    than until the next prune: a thread woken by each slice (``notify``), and every ``RETRY_SECONDS``
    to retry a failed round. Started with the archiver when a bucket is configured."""

    RETRY_SECONDS = 60.0

    def __init__(self, settings: Settings):
        self.copies = SliceCopies(settings)
        self.backups = Catalog(settings.backup_dir)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pitr-upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """One more round (the slice a stop stores goes up now, not at the next start), then stop;
        waits ``timeout`` seconds at most."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.clear()
            last = self._stopping.is_set()
            self._round()
            if last:
                return
            self._wake.wait(self.RETRY_SECONDS)

    def _round(self) -> None:
        try:
            outcome = self.copies.upload(self.backups.load(), clock.now())
        except Exception as exc:  # the catalog unreadable: logged, tried again
            log.warning("slice upload round failed: %s: %s", type(exc).__name__, exc)
        else:
            if outcome["files"]:
                log.info("uploaded %d oplog slices (%d bytes)", len(outcome["files"]), outcome["bytes"])
