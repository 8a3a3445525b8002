"""Command oplog entries (``c``) as ordinary commands on the renamed namespaces, idempotent.

Each command is run on the target the scope gives its collection (``ReplayScope.target``), with the
collection UUIDs (``ui``) left out; an outcome that means "already done" (the collection exists, is
gone, the index is gone) is accepted, since oplog application may repeat what the base dump or an
earlier replay did:

- ``create``: with its options; ``idIndex`` is left out (the default one is built); the embedded
  server's ``viewPipeline`` becomes ``pipeline``; a time-series collection is refused (the native
  restore does not restore those either);
- ``drop``; ``dropDatabase``: the whole database when nothing is renamed or filtered, else the
  targets of that database's namespaces the replay has written (the entries before it drop the
  others: mongod and the embedded server log a ``drop`` per collection first);
- ``createIndexes`` (an ``indexes`` list, or one spec inline as mongod 4.2 wrote it) and
  ``commitIndexBuild`` as ``createIndexes``; ``startIndexBuild``/``abortIndexBuild`` skipped;
- ``dropIndexes``/``deleteIndexes`` (and the singular forms);
- ``renameCollection``: between two replayed namespaces, a rename of the targets (over an existing
  target: that is a later state being re-applied); out of them, a drop; into them from a namespace
  not replayed, refused (its documents are not in the restore);
- ``collMod``, ``convertToCapped``; ``dbCheck``, ``setMultikeyMetadata`` skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson.son import SON

from sidecar.engine.namespaces import is_internal, split_namespace
from sidecar.engine.replay.crud import UnsupportedEntry
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import OplogOp
from sidecar.engine.restore_plan import clean_index

NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND, NAMESPACE_EXISTS = 26, 27, 48
SKIPPED_COMMANDS = frozenset(
    {"startIndexBuild", "abortIndexBuild", "setMultikeyMetadata", "dbCheck", "abortTransaction"}
)
_DROP_INDEX = frozenset({"dropIndexes", "deleteIndexes", "dropIndex", "deleteIndex"})
_UNSENT = frozenset({"idIndex", "ui", "uuid"})


@dataclass(frozen=True)
class Command:
    """A command to run on ``db`` (``admin`` for renames); ``target`` is the namespace it changes."""

    name: str
    target: str
    db: str
    body: SON
    accepted: frozenset[int] = frozenset()  # server error codes that mean "already so"


def _body(name: str, coll: str, obj: dict[str, Any], skip: frozenset[str] = _UNSENT) -> SON:
    body = SON([(name, coll)])
    for key, value in obj.items():
        if key != name and key not in skip:
            body[key] = value
    return body


@dataclass
class CommandTranslator:
    """Turns command entries into ``Command``s within ``scope``; remembers the source namespaces the
    replay wrote (for ``dropDatabase`` under renaming or filters)."""

    scope: ReplayScope
    written: set[str] = field(default_factory=set)

    def commands(self, op: OplogOp) -> list[Command]:
        name = op.command
        if name in SKIPPED_COMMANDS:
            return []
        obj = dict(op.o.items())
        db = split_namespace(op.ns)[0]
        if name == "renameCollection":
            return self._rename(obj)
        if name == "dropDatabase":
            return self._drop_database(db)
        coll = obj.get(name)
        if not isinstance(coll, str):
            raise UnsupportedEntry(f"command {name!r} does not name a collection")
        source = f"{db}.{coll}"
        target = self.scope.target(source)
        if target is None:
            return []
        tdb, tcoll = split_namespace(target)
        self.written.add(source)
        if name == "create":
            return [self._create(obj, target)]
        if name == "drop":
            return [_drop(target)]
        if name in ("createIndexes", "commitIndexBuild"):
            return [Command("createIndexes", target, tdb, _index_build(obj, name, tcoll))]
        if name in _DROP_INDEX:
            body = SON([("dropIndexes", tcoll), ("index", obj.get("index"))])
            return [
                Command("dropIndexes", target, tdb, body, frozenset({NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND}))
            ]
        if name in ("collMod", "convertToCapped"):
            return [Command(name, target, tdb, _body(name, tcoll, obj))]
        raise UnsupportedEntry(f"unknown oplog command {name!r}")

    def _create(self, obj: dict[str, Any], target: str) -> Command:
        if "timeseries" in obj:  # as the native restore: its buckets are system collections
            raise UnsupportedEntry("creates a time-series collection, which this engine does not restore")
        tdb, tcoll = split_namespace(target)
        body = _body("create", tcoll, obj, _UNSENT | {"viewPipeline"})
        if "viewPipeline" in obj and "pipeline" not in obj:
            body["pipeline"] = obj["viewPipeline"]
        return Command("create", target, tdb, body, frozenset({NAMESPACE_EXISTS}))

    def _rename(self, obj: dict[str, Any]) -> list[Command]:
        source, dest = obj.get("renameCollection"), obj.get("to")
        if not isinstance(source, str) or not isinstance(dest, str):
            raise UnsupportedEntry("renameCollection without its from and to namespaces")
        from_target, to_target = self.scope.target(source), self.scope.target(dest)
        if from_target is None and to_target is None:
            return []
        if to_target is None:
            assert from_target is not None
            self.written.add(source)
            return [_drop(from_target)]
        if from_target is None:
            raise UnsupportedEntry(
                f"renames {source}, which is not replayed, into {dest}, which is: its documents are not "
                "in the restore"
            )
        self.written.update((source, dest))
        # Always over the target: in the source's history it did not exist then (or dropTarget was
        # given), so one there now is a later state that the entries after this one rebuild.
        body = SON([("renameCollection", from_target), ("to", to_target), ("dropTarget", True)])
        return [Command("renameCollection", to_target, "admin", body, frozenset({NAMESPACE_NOT_FOUND}))]

    def _drop_database(self, db: str) -> list[Command]:
        if self.scope.is_plain:
            if is_internal(f"{db}.*"):
                return []
            return [Command("dropDatabase", f"{db}.*", db, SON([("dropDatabase", 1)]))]
        sources = sorted(ns for ns in self.written if split_namespace(ns)[0] == db)
        return [_drop(t) for t in (self.scope.target(ns) for ns in sources) if t is not None]


def _drop(target: str) -> Command:
    db, coll = split_namespace(target)
    return Command("drop", target, db, SON([("drop", coll)]), frozenset({NAMESPACE_NOT_FOUND}))


def _index_build(obj: dict[str, Any], name: str, coll: str) -> SON:
    if "indexes" in obj:
        specs = [clean_index(spec) for spec in obj["indexes"]]
    else:  # one spec inline (createIndexes as mongod 4.2 and earlier logged it)
        specs = [clean_index({k: v for k, v in obj.items() if k != name})]
    return SON([("createIndexes", coll), ("indexes", specs)])
