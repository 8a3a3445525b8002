"""Restore drills: an archive restored into scratch databases, then compared with its scan.

Counts, an order-independent content hash per collection, indexes, collection options and views are
compared; the scratch databases (``sidecar_drill_<job>_<db>``) are dropped even when the drill fails
midway, and leftovers of crashed drills are dropped before each new one. The drill reads the same
source as the scan before it; pinned (``ArchiveSource.pinned``), that is the very bytes scanned.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import pymongo

from sidecar.engine.restore import NativeRestore
from sidecar.engine.restore_errors import error_text
from sidecar.engine.restore_plan import RestoreOptions, RestorePlan, plan_restore
from sidecar.engine.scratch_names import SCRATCH_PREFIX
from sidecar.integrity.compare import Wording, comparable, index_differences, index_signatures
from sidecar.integrity.digest import server_content_hash
from sidecar.integrity.failure import PROOF_ERRORS, VerifyFailed, first_problem, server_or_data
from sidecar.integrity.scan import ArchiveScan
from sidecar.progress import Progress
from sidecar.store.source import ArchiveReadError, ArchiveSource

DRILL_PREFIX = SCRATCH_PREFIX
RESTORED = Wording(  # the server's copy (have) against the archive (want)
    missing="{ns}: index {name} missing after the restore",
    unexpected="{ns}: unexpected index {name} after the restore",
    differs="{ns}: index {name} is {have}, the archive has {want}",
)


def drill_database_name(job_id: str, db: str) -> str:
    name = f"{DRILL_PREFIX}{job_id}_{db}"
    if len(name.encode()) > 63:
        name = f"{DRILL_PREFIX}{job_id}_{hashlib.sha1(db.encode()).hexdigest()[:16]}"
    return name


def drop_drill_databases(
    client: pymongo.MongoClient, prefix: str = DRILL_PREFIX, names: list[str] | None = None
) -> tuple[list[str], list[dict[str, str]]]:
    """Drop databases whose name starts with ``prefix`` (and ``names``): (dropped, [{name, error}])."""
    dropped: list[str] = []
    failed: list[dict[str, str]] = []
    wanted = list(names or [])
    try:
        wanted += [n for n in client.list_database_names() if n.startswith(prefix) and n not in wanted]
    except pymongo.errors.PyMongoError as exc:
        if not wanted:
            return dropped, [{"name": f"{prefix}*", "error": f"cannot list databases: {error_text(exc)}"}]
    for name in wanted:
        try:
            client.drop_database(name)
            dropped.append(name)
        except pymongo.errors.PyMongoError as exc:
            failed.append({"name": name, "error": error_text(exc)})
    return dropped, failed


@dataclass
class Drill:
    """Restore the whole archive into scratch databases and compare what the server holds with it."""

    client: pymongo.MongoClient
    source: ArchiveSource
    scan: ArchiveScan
    job_id: str
    progress: Progress = field(default_factory=Progress, kw_only=True)
    cancel: threading.Event | None = field(default=None, kw_only=True)
    written_bytes: int = field(default=0, init=False)  # document bytes restored

    def run(self) -> dict[str, Any]:
        assert self.scan.prelude is not None
        leftovers_dropped, leftovers_failed = drop_drill_databases(self.client)
        databases = {ns.split(".", 1)[0] for ns in self.scan.namespaces}
        mapping = {db: drill_database_name(self.job_id, db) for db in databases}

        def rename(ns: str) -> str:
            db, coll = ns.split(".", 1)
            return f"{mapping[db]}.{coll}"

        details: dict[str, Any] = {
            "scratchDatabases": sorted(set(mapping.values())),
            "leftoversDropped": leftovers_dropped or None,
            "leftoversNotDropped": leftovers_failed or None,
        }
        failure: VerifyFailed | None = None
        try:
            plan = plan_restore(
                self.scan.prelude, self.scan.counts(), RestoreOptions(oplog_replay=False), rename=rename
            )
            self._restore(plan)
            mismatches, checked = self._compare(plan)
            details.update(checked)
            if mismatches:
                failure = VerifyFailed(
                    f"the restored data differs from the archive: {first_problem(mismatches)}",
                    check="drill",
                    details={"mismatches": mismatches},
                )
        except VerifyFailed as exc:
            failure = exc
        except PROOF_ERRORS as exc:
            failure = server_or_data(exc, "restore", "drill")
        finally:
            dropped, not_dropped = drop_drill_databases(
                self.client, f"{DRILL_PREFIX}{self.job_id}_", sorted(set(mapping.values()))
            )
            details["scratchDropped"] = dropped
            if not_dropped:
                details["scratchNotDropped"] = not_dropped
                names = ", ".join(n["name"] for n in not_dropped)
                cleanup = (
                    f"could not drop scratch database(s) {names} ({not_dropped[0]['error']}); "
                    f"the next drill drops them"
                )
                if failure is None:
                    details["warnings"] = [cleanup]
                else:
                    failure.reason = f"{failure.reason}; {cleanup}"
        if failure is not None:
            failure.details = {**details, **failure.details}
            raise failure
        return details

    def _restore(self, plan: RestorePlan) -> None:
        self.progress.scope = "drill"
        try:
            with self.source.open() as opened:
                result = NativeRestore(
                    self.client, plan, RestoreOptions(oplog_replay=False), self.progress, self.cancel
                ).run(opened.data)
        except ArchiveReadError as exc:
            raise VerifyFailed(f"cannot read the archive again for the drill: {exc}", check="drill") from None
        finally:
            self.progress.scope = ""
        self.written_bytes += result.bytes
        if result.error_count:
            raise VerifyFailed(
                f"{result.error_count} write(s) failed in the scratch databases "
                f"(first: {result.first_error})",
                check="drill",
                details={"writeErrors": result.errors},
            )

    def _compare(self, plan: RestorePlan) -> tuple[list[str], dict[str, Any]]:
        mismatches: list[str] = []
        documents = indexes = 0
        for p in plan.namespaces:
            facts = self.scan.namespaces[p.source]
            db = self.client[p.target_db]
            info = next(iter(db.list_collections(filter={"name": p.target_collection})), None)
            if info is None:
                mismatches.append(f"{p.source}: not restored")
                continue
            if comparable(info.get("options", {})) != comparable(p.options):
                mismatches.append(
                    f"{p.source}: options are {dict(info.get('options', {}))}, the archive has {p.options}"
                )
            if p.is_view:
                continue
            count, digest = server_content_hash(db[p.target_collection])
            documents += count
            if count != facts.documents:
                mismatches.append(
                    f"{p.source}: {count} documents restored, the archive holds {facts.documents}"
                )
            elif digest != facts.content_hash:
                mismatches.append(f"{p.source}: the content hash of the restored documents differs")
            got = index_signatures(db[p.target_collection].list_indexes())
            indexes += len(got)
            mismatches += index_differences(p.source, got, index_signatures(p.indexes), RESTORED)
        return mismatches, {"namespaces": len(plan.namespaces), "documents": documents, "indexes": indexes}
