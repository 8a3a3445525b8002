"""The scratch databases of the restore proofs (drills, the pitr check): their names, and which oplog
entries wrote them.

Every proof writes only databases named ``sidecar_drill_<job>_<db>``. They are never restored, never
replayed, and never archived (the oplog archive records the application, not the proofs), also when
a proof ran on the backed-up server by the operator's opt-in.
"""

from __future__ import annotations

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.engine.replay.units import flatten

SCRATCH_PREFIX = "sidecar_drill_"
_NO_TS = Timestamp(0, 0)


def is_scratch_database(db: str) -> bool:
    return db.startswith(SCRATCH_PREFIX)


def is_scratch_namespace(ns: str) -> bool:
    return is_scratch_database(ns.partition(".")[0])


def is_scratch_entry(entry: RawBSONDocument) -> bool:
    """An oplog entry that writes scratch databases only: its namespace is one, or (an ``applyOps``
    command, how mongod logs a replay's batch or a transaction) every operation nested in it is."""
    if is_scratch_namespace(str(entry.get("ns") or "")):
        return True
    if entry.get("op") != "c" or not isinstance(entry.get("o"), RawBSONDocument):
        return False
    if "applyOps" not in entry["o"]:
        return False
    namespaces = [op.ns for op in flatten(entry.get("ts") or _NO_TS, entry)]
    return bool(namespaces) and all(is_scratch_namespace(ns) for ns in namespaces)
