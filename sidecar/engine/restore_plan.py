"""Planning a restore: mongorestore's options, --nsFrom/--nsTo renaming, target-name checks,
which namespaces of the archive go where (and what happens to those that exist already), which of
them a restore without drop would collide with (``find_collisions``), and ``clean_index``, an
archived index spec as ``createIndexes`` takes it (the restore's and the oplog's).

Nothing here writes to MongoDB; the plan is made, and refused if it must be, before the first write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from sidecar.archive.metadata import parse_metadata_json
from sidecar.archive.reader import DocumentChunk, Prelude
from sidecar.engine.namespaces import SKIPPED_DATABASES, Renamer, check_target_name, namespace_matches
from sidecar.engine.restore_errors import RestoreError
from sidecar.engine.scratch_names import is_scratch_database
from sidecar.text import counted

# fields of an index spec as a server lists or logs it that createIndexes refuses: ns (mongod before 4.4),
# entryFormat and multikey (the embedded server; multikey: the index has met an array, set again as it builds)
_INDEX_FIELDS_DROPPED = frozenset({"ns", "entryFormat", "multikey"})
MAX_COMPARED_IDS = 200_000  # _ids of the archive kept (in all) to compare with the target collections
ID_QUERY_BATCH = 1000


@dataclass(frozen=True)
class RestoreOptions:
    """mongorestore's options, by the same names: --nsInclude, --nsExclude, --nsFrom/--nsTo, --drop..."""

    ns_include: tuple[str, ...] = ()
    ns_exclude: tuple[str, ...] = ()
    ns_from: tuple[str, ...] = ()
    ns_to: tuple[str, ...] = ()
    drop: bool = False
    dry_run: bool = False
    oplog_replay: bool = True  # replay the archive's oplog when the restore is a full one
    batch_documents: int = 1000
    batch_bytes: int = 8 * 1024 * 1024

    @property
    def is_full(self) -> bool:
        """Every namespace of the archive under its own name: the only case the oplog is replayed in."""
        return not (self.ns_include or self.ns_exclude or self.ns_from)

    def as_json(self) -> dict[str, Any]:
        """The options by their JSON names (the API's fields, a job's recorded parameters)."""
        return {key: _plain(getattr(self, name)) for name, key in OPTION_KEYS.items()}


OPTION_KEYS = {  # field -> JSON name
    "ns_include": "nsInclude",
    "ns_exclude": "nsExclude",
    "ns_from": "nsFrom",
    "ns_to": "nsTo",
    "drop": "drop",
    "dry_run": "dryRun",
    "oplog_replay": "oplogReplay",
}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- planning ------------------------------------------------------------------------------------


@dataclass
class NamespacePlan:
    source: str
    target: str
    type: str
    options: dict[str, Any]
    indexes: list[dict[str, Any]]
    documents: int = 0
    bytes: int = 0
    exists: bool = False
    existing_documents: int = 0
    action: str = "create"  # create | replace (dropped first) | append (exists, no --drop)

    @property
    def target_db(self) -> str:
        return self.target.split(".", 1)[0]

    @property
    def target_collection(self) -> str:
        return self.target.split(".", 1)[1]

    @property
    def is_view(self) -> bool:
        return self.type == "view"

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "type": self.type,
            "action": self.action,
            "documents": self.documents,
            "bytes": self.bytes,
            "indexes": [str(ix.get("name")) for ix in self.indexes],
            "existingDocuments": self.existing_documents if self.exists else None,
        }


@dataclass
class RestorePlan:
    namespaces: list[NamespacePlan]
    skipped: list[dict[str, str]] = field(default_factory=list)
    oplog_entries: int = 0
    replay_oplog: bool = False

    @property
    def documents(self) -> int:
        return sum(p.documents for p in self.namespaces)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.namespaces)

    def existing_targets(self) -> list[str]:
        return [p.target for p in self.namespaces if p.exists]

    def target_databases(self) -> list[str]:
        return sorted({p.target_db for p in self.namespaces})


def plan_restore(
    prelude: Prelude,
    counts: Mapping[str, tuple[int, int]],
    options: RestoreOptions,
    rename: Callable[[str], str] | None = None,
) -> RestorePlan:
    """Which namespaces of the archive go where; ``counts`` maps source namespace -> (documents, bytes)."""
    rename = rename or Renamer(options.ns_from, options.ns_to)
    plan = RestorePlan([])
    targets: dict[str, str] = {}
    for meta in prelude.collections:
        ns = meta.namespace
        source = str(ns)
        if ns.is_oplog:
            plan.oplog_entries = counts.get(source, (0, 0))[0]
            continue
        if not namespace_matches(source, options.ns_include, options.ns_exclude):
            continue
        if ns.db in SKIPPED_DATABASES:
            plan.skipped.append({"namespace": source, "reason": f"the {ns.db} database is never restored"})
            continue
        if is_scratch_database(ns.db):  # left by a proof that ran on the backed-up server
            plan.skipped.append({"namespace": source, "reason": "a restore proof's scratch database"})
            continue
        if ns.collection.startswith("system.") and ns.collection != "system.js":
            plan.skipped.append({"namespace": source, "reason": "system collection"})
            continue
        if meta.type == "timeseries":
            raise RestoreError(
                f"{source} is a timeseries collection, which the native engine does not restore; "
                "use the mongorestore engine (SIDECAR_ENGINE=mongodump) or exclude it with --ns-exclude",
                "verify",
            )
        target = rename(source)
        problem = check_target_name(target)
        if problem:
            raise RestoreError(f"cannot restore {source} as {target}: {problem}", "verify")
        if target in targets:
            raise RestoreError(
                f"{targets[target]} and {source} would both be restored as {target}; fix --ns-from/--ns-to",
                "verify",
            )
        targets[target] = source
        try:
            metadata = parse_metadata_json(meta.metadata)
        except ValueError as exc:
            raise RestoreError(f"metadata of {source} in the archive prelude: {exc}", "verify") from None
        documents, size = counts.get(source, (0, 0))
        plan.namespaces.append(
            NamespacePlan(
                source=source,
                target=target,
                type=meta.type or metadata.get("type") or "collection",
                options=dict(metadata.get("options") or {}),
                indexes=[dict(ix) for ix in metadata.get("indexes") or []],
                documents=documents,
                bytes=size,
            )
        )
    plan.replay_oplog = options.oplog_replay and options.is_full and plan.oplog_entries > 0
    return plan


def inspect_targets(client: pymongo.MongoClient, plan: RestorePlan, *, drop: bool) -> None:
    """Fill in which targets exist already, how many documents they hold, and so what happens to them."""
    existing: dict[str, dict[str, str]] = {}
    for db_name in plan.target_databases():
        existing[db_name] = {
            info["name"]: info.get("type", "collection")
            for info in client[db_name].list_collections(filter={}, nameOnly=True)
        }
    for p in plan.namespaces:
        kind = existing.get(p.target_db, {}).get(p.target_collection)
        p.exists = kind is not None
        if p.exists and kind != "view":
            coll = client[p.target_db][p.target_collection]
            # exact when the post-restore check will add to it, the cheap estimate when it is dropped
            p.existing_documents = coll.estimated_document_count() if drop else coll.count_documents({})
        p.action = "create" if not p.exists else ("replace" if drop else "append")


# -- collisions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wording:
    """How the caller names the restore's options in messages: the API's JSON fields or the CLI's flags."""

    drop: str
    rename: str
    no_safety_backup: str


API_WORDING = Wording('"drop": true', '"nsFrom"/"nsTo"', '"safetyBackup": false')
CLI_WORDING = Wording("--drop", "--ns-from/--ns-to", "--no-safety-backup")


class ArchiveIds:
    """The ``_id`` of each document of the archive, by source namespace, ``limit`` of them in all: fed
    the scan's document chunks, so that comparing them with the target collections needs no second read.
    Only the namespaces the restore takes (``options``' --nsInclude/--nsExclude) are kept."""

    def __init__(
        self,
        options: RestoreOptions | None = None,
        limit: int = MAX_COMPARED_IDS,
        only: set[str] | None = None,
    ):
        self.options = options or RestoreOptions()
        self.limit = limit
        self.only = only  # the namespaces whose _ids the check needs (their targets hold documents)
        self.ids: dict[str, list[Any]] = {}
        self.seen: dict[str, int] = {}  # documents of each namespace that went by
        self.looked_at: dict[str, int] = {}  # of those, the ones whose _id was kept (or that had none)
        self.kept = 0

    def feed(self, chunk: DocumentChunk) -> None:
        ns = str(chunk.namespace)
        if chunk.namespace.is_oplog or not namespace_matches(
            ns, self.options.ns_include, self.options.ns_exclude
        ):
            return
        self.seen[ns] = self.seen.get(ns, 0) + chunk.count
        if self.only is not None and ns not in self.only:
            return  # counted as seen, not compared: a target filled meanwhile is refused, not appended to
        ids = self.ids.setdefault(ns, [])
        for raw in chunk.documents():
            if self.kept >= self.limit:
                return
            try:
                doc_id = RawBSONDocument(bytes(raw)).get("_id")
            except BSONError:  # a damaged document: the scan feeding these refuses the archive
                return
            if doc_id is not None:
                ids.append(doc_id)
                self.kept += 1
            self.looked_at[ns] = self.looked_at.get(ns, 0) + 1

    def complete(self, ns: str) -> bool:
        return self.looked_at.get(ns, 0) == self.seen.get(ns, 0)


@dataclass(frozen=True)
class Collision:
    """A target collection that holds documents while a restore without drop would insert into it."""

    target: str
    existing_documents: int
    archive_documents: int
    colliding_ids: int  # of the archive's _ids compared (all of them when ``all_compared``), already there
    compared_ids: int
    all_compared: bool

    @property
    def refused(self) -> bool:
        """Duplicate keys found, or not ruled out: only a proven disjoint append may go ahead."""
        return self.colliding_ids > 0 or not self.all_compared

    def describe(self) -> str:
        if self.all_compared:
            return f"{self.target} ({self.colliding_ids:,} of the archive's {self.archive_documents:,} _ids)"
        return (
            f"{self.target} ({self.colliding_ids:,} of the first {self.compared_ids:,} of the archive's "
            f"{self.archive_documents:,} _ids; the rest not compared)"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "existingDocuments": self.existing_documents,
            "archiveDocuments": self.archive_documents,
            "collidingIds": self.colliding_ids,
            "comparedIds": self.compared_ids,
            "allCompared": self.all_compared,
            "refused": self.refused,
        }


class TargetsInUse(RestoreError):
    """A restore without drop refused before any write: some target collections hold the same _ids."""

    def __init__(self, collisions: list[Collision], wording: Wording):
        self.collisions = collisions
        super().__init__(conflict_message(collisions, wording), "restore")


def find_collisions(
    client: pymongo.MongoClient, plan: RestorePlan, ids: ArchiveIds, *, drop: bool
) -> list[Collision]:
    """The target collections a restore without drop would insert into while they hold documents (after
    ``inspect_targets``), each with how many of the archive's _ids it holds already."""
    if drop:
        return []
    found = []
    for p in plan.namespaces:
        if p.action != "append" or p.is_view or not p.existing_documents:
            continue
        archive_ids = ids.ids.get(p.source, [])
        coll = client[p.target_db][p.target_collection]
        colliding = sum(
            coll.count_documents({"_id": {"$in": archive_ids[i : i + ID_QUERY_BATCH]}})
            for i in range(0, len(archive_ids), ID_QUERY_BATCH)
        )
        found.append(
            Collision(
                target=p.target,
                existing_documents=p.existing_documents,
                archive_documents=p.documents,
                colliding_ids=colliding,
                compared_ids=len(archive_ids),
                all_compared=ids.complete(p.source),
            )
        )
    return found


def conflict_message(collisions: list[Collision], wording: Wording, *, dry_run: bool = False) -> str:
    """Why a restore without drop is (or, for a dry run, would be) refused, and the two ways to go on."""
    refused = [c for c in collisions if c.refused]
    unproven = " (or too many to compare them all)" if any(not c.all_compared for c in refused) else ""
    what = (
        f"{counted(len(refused), 'target collection')} {'holds' if len(refused) == 1 else 'hold'} "
        f"documents with the archive's _ids already{unproven}, "
        f"so its inserts would fail with E11000 duplicate key: {', '.join(c.describe() for c in refused)}"
    )
    how = (
        f"to replace them with the archive's copy, restore with {wording.drop} (a safety backup of them "
        f"is taken first); to restore beside them, rename with {wording.rename} into a new database"
    )
    if dry_run:
        return f"the restore (not a dry run) would be refused: {what}; {how}"
    return f"refusing to restore without drop: {what}. Nothing was written, no safety backup was taken; {how}"


def clean_index(spec: Mapping[str, Any]) -> SON:
    return SON((k, v) for k, v in spec.items() if k not in _INDEX_FIELDS_DROPPED)
