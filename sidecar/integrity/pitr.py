"""Integrity level ``pitr``: the oplog archive proven to carry one base backup to the next.

Base backup N-1 is restored into scratch databases and carried to N's consistent point by exactly
what a restore to that point runs: the input builder ``PointInput`` (N-1's own oplog, then every
archived entry after its consistent point, each slice read and checked first) and the replay engine's
planner and replay; base N is restored with its own oplog (the same builder, no slices) into a second
scratch set. Per collection their type and options,
document counts, content hashes and indexes must be equal. Each base passes its full check on the
way (the bytes restored are the bytes scanned: ``ArchiveSource.pinned``), each slice read must have
its catalogued sha256, size and number of entries, so what is left for the comparison to catch is a
slice whose content is wrong though consistent. A difference names the documents (by ``_id``) and
the slices whose entries wrote them. Both scratch sets are always dropped; leftovers of crashed
drills and checks are dropped first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
from bson.timestamp import Timestamp

from sidecar.archive import DocumentChunk
from sidecar.config import Settings
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.restore import NativeRestore
from sidecar.engine.restore_plan import RestoreOptions, plan_restore
from sidecar.integrity.checks import compare_file, compare_manifest
from sidecar.integrity.drill import drop_drill_databases
from sidecar.integrity.failure import PROOF_ERRORS, VerifyFailed, first_problem, server_or_data
from sidecar.integrity.scan import ArchiveScan, scan_archive
from sidecar.integrity.scratch import (
    ScratchSet,
    collection_facts,
    compare_facts,
    differing_ids,
    only_order_differs,
    writers,
)
from sidecar.pitr.planning.pair import BasePair
from sidecar.pitr.planning.point_input import PointInput, UnverifiedSlice
from sidecar.progress import Progress
from sidecar.store.catalog import Catalog, Entry
from sidecar.store.source import ArchiveReadError, ArchiveSource, source_for

EXPLAINED_NAMESPACES = 3


class PitrCheck:
    def __init__(
        self,
        settings: Settings,
        client: pymongo.MongoClient,
        pair: BasePair,
        job_id: str,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ):
        self.settings, self.client, self.pair = settings, client, pair
        self.progress, self.cancel = progress or Progress(), cancel or threading.Event()
        self.replayed, self.restored = ScratchSet(f"{job_id}p"), ScratchSet(f"{job_id}n")
        self.written_bytes = 0  # document bytes restored and oplog entry bytes replayed

    def run(self) -> dict[str, Any]:
        """The details of a passing check, or VerifyFailed (check ``pitr``, ``slice``, ``pitr-base`` or
        SERVER_CHECK) with them."""
        dropped, not_dropped = drop_drill_databases(self.client)
        details: dict[str, Any] = {"pair": self.pair.as_json(), "leftoversDropped": dropped or None}
        if not_dropped:
            details["leftoversNotDropped"] = not_dropped
        self.progress.scope = "pitr"
        failure: VerifyFailed | None = None
        try:
            details.update(self._check())
        except VerifyFailed as exc:
            failure = exc
        except PROOF_ERRORS as exc:
            failure = server_or_data(exc, "restore or replay", "pitr")
        finally:
            self.progress.scope = ""
            details.update(self._drop())
        if failure is not None:
            failure.details = {**details, **failure.details}
            raise failure
        return details

    def _check(self) -> dict[str, Any]:
        # the restore's own input builder and planner: N-1 carried by the slices, N with its own oplog
        carried = PointInput(self.settings, self.pair.older_point, self.pair.slices)
        alone = PointInput(self.settings, None)
        try:
            _read_slices(carried)
            older = self._restore(self.pair.older, self.replayed, carried, self.pair.newer_point)
            newer = self._restore(self.pair.newer, self.restored, alone, None)
            replayed = collection_facts(self.client, self.replayed)
            restored = collection_facts(self.client, self.restored)
            differences = compare_facts(replayed, restored)
            if differences:
                raise self._failure(differences, carried)
        finally:
            carried.close()
            alone.close()
        return {
            "replay": {k: older[k] for k in ("entries", "operations", "transactions", "firstTs", "lastTs")},
            "baseOplogOperations": newer["operations"],
            "namespaces": len(restored),
            "documents": sum(f.get("documents", 0) for f in restored.values()),
            "indexes": sum(len(f.get("indexes", {})) for f in restored.values()),
            "scratchDatabases": sorted({*self.replayed.databases, *self.restored.databases}),
        }

    def _restore(
        self, name: str, scratch: ScratchSet, source: PointInput, until: Timestamp | None
    ) -> dict[str, Any]:
        """A base restored into ``scratch``, its oplog handed to ``source``, whose entries are then
        planned and replayed through ``until``, as a restore to that point does: the replay's counts."""
        entry = Catalog(self.settings.backup_dir).get(name)
        if entry is None:
            raise VerifyFailed(f"base backup {name} is no longer in the catalog", check="pitr-base")
        archive = source_for(self.settings, self.settings.backup_dir / name, entry)

        def keep_oplog(chunk: DocumentChunk) -> None:
            if chunk.namespace.is_oplog:
                source.feed_base(chunk)

        with _base_readable(name), archive.pinned():
            scan = self._full_check(name, archive, entry, keep_oplog)
            replay_options = source.options(until=until, scope=ReplayScope(rename=scratch.rename))
            source.plan(replay_options).raise_if_refused()  # before the first write, as the restore
            options = RestoreOptions(oplog_replay=False)  # never a proof's scratch database
            plan = plan_restore(scan.prelude, scan.counts(), options, rename=scratch.rename)
            with archive.open() as opened:
                restore = NativeRestore(self.client, plan, options, self.progress, self.cancel)
                written = restore.run(opened.data)
        self.written_bytes += written.bytes
        if written.error_count:
            raise VerifyFailed(
                f"{written.error_count} write(s) of base backup {name} failed in the scratch databases",
                check="pitr",
                details={"writeErrors": written.errors},
            )
        result = source.replay(self.client, replay_options, cancel=self.cancel)
        self.written_bytes += result.bytes
        return result.as_json()

    def _full_check(
        self, name: str, source: ArchiveSource, entry: Entry, on_chunk: Callable[[DocumentChunk], None]
    ) -> ArchiveScan:
        """The base's full-level scan (its oplog handed to ``on_chunk``); VerifyFailed pitr-base if not."""
        try:
            scan = scan_archive(
                source, manifest=entry.get("namespaces"), on_chunk=on_chunk, cancel=self.cancel
            )
        except VerifyFailed as exc:  # cannot be read through
            raise VerifyFailed(f"base backup {name}: {exc.reason}", check="pitr-base") from None
        problems = ([scan.failure.reason] if scan.failure else []) + compare_manifest(scan, entry)
        problems += compare_file(scan, entry)
        if problems or scan.prelude is None:
            reason = first_problem(problems) if problems else "no prelude"
            raise VerifyFailed(f"base backup {name} fails its full check: {reason}", check="pitr-base")
        return scan

    def _failure(self, differences: dict[str, list[str]], carried: PointInput) -> VerifyFailed:
        problems = [p for found in differences.values() for p in found]
        suspects: dict[str, int] = {}
        differing: dict[str, list[str]] = {}
        reordered = False
        for ns in list(differences)[:EXPLAINED_NAMESPACES]:
            first, second = self._collections(ns)
            ids = differing_ids(first, second)
            reordered = reordered or only_order_differs(first, second, ids)
            if ids:
                differing[ns] = [str(value) for value in ids]
                for name, count in writers(carried.slice_entries(), ns, ids).items():
                    suspects[name] = suspects.get(name, 0) + count
        reason = (
            f"base backup {self.pair.older} with the archived oplog replayed through "
            f"{self.pair.as_json()['throughTime']} does not reproduce base backup {self.pair.newer}: "
            f"{first_problem(problems)}"
        )
        if suspects:
            reason += f"; the differing documents were written by slice(s) {', '.join(sorted(suspects))}"
        elif differing:
            reason += "; no slice wrote the differing documents (base backup data differs)"
        if reordered:
            reason += (
                " (the same fields and values in another order: see the embedded server's update "
                "entries in docs/pitr-replay.md, Limits)"
            )
        details = {
            "mismatches": problems,
            "differingIds": differing or None,
            "suspectSlices": suspects or None,
        }
        return VerifyFailed(reason, check="pitr", details=details)

    def _collections(self, ns: str) -> tuple[pymongo.collection.Collection, pymongo.collection.Collection]:
        """The collection ``ns`` after the replay, and restored from base N."""
        (db1, coll1), (db2, coll2) = self.replayed.target(ns), self.restored.target(ns)
        return self.client[db1][coll1], self.client[db2][coll2]

    def _drop(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scratchDropped": []}
        for scratch in (self.replayed, self.restored):
            dropped, failed = drop_drill_databases(self.client, scratch.prefix, sorted(scratch.databases))
            out["scratchDropped"] += dropped
            if failed:
                out.setdefault("scratchNotDropped", []).extend(failed)
        return out


@contextlib.contextmanager
def _base_readable(name: str) -> Iterator[None]:
    """A base backup with no copy to read (``pinned`` opens it) fails the check as that base's."""
    try:
        yield
    except ArchiveReadError as exc:
        raise VerifyFailed(f"base backup {name}: {exc}", check="pitr-base") from None


def _read_slices(source: PointInput) -> None:
    """The slices read and checked before any write; a bad one fails the check as ``slice``."""
    try:
        source.read_slices()
    except UnverifiedSlice as exc:
        raise VerifyFailed(str(exc), check="slice", details={"slice": exc.slice}) from None
