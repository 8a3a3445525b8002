"""``sidecar oplog find`` and ``GET /api/backup/oplog``: the operations of the archived oplog that
match a query (``find_query``), oldest first, with the ``--before-op`` that undoes each and the two
restores that do it (``undo``: under a new name beside the live data, or in place with ``--drop``).

The slices are read one entry at a time, in chain order; the catalog's per-slice first/last positions,
wall times and namespaces skip, unopened, the slices that cannot hold a match. At most ``limit`` items
are listed: the listing then says it is truncated and where the next one is (``next``: search again
with ``since`` set to it). Memory holds the listed items and the entry being read.

**Past the archive.** Then the server's own oplog after the newest stored entry (``server_oplog.py``):
what the archiver has not stored yet. Each item's ``source`` says where it was read (``archive``,
``serverOplog``, or both for a group that spans the archive's end); ``serverOplog`` says how much of
the server was read, or why not.

**Groups.** Deletes on one namespace, and drops (``drop``, ``dropDatabase``) in one database, that
follow each other with no other operation on it in between and at most ``GROUP_GAP_SECONDS`` apart
(wall time) are one item: "412 deletes on maekcord.patients between ... and ...", with the first and
last ``t:i``; its ``beforeOp`` is the first one's. A search by ``id`` lists single operations.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.config import Settings
from sidecar.engine.replay.units import ReplayError
from sidecar.pitr.find.ops import Operation, position
from sidecar.pitr.find.ops import operations as entry_operations
from sidecar.pitr.find.query import FindQuery
from sidecar.pitr.find.server_oplog import SOURCE, ServerOplog, server_entries
from sidecar.pitr.optime import from_json
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.slices import SliceEntry, SliceError, iter_entries, oplog_dir
from sidecar.text import iso_utc
from sidecar.time_input import parse_iso

GROUP_GAP_SECONDS = 2.0
ARCHIVE = "archive"
_MAX_NAMES = 20  # the collections a drop group lists

GroupKey = tuple[str, str]  # ("delete", namespace) or ("drop", database)


def undo(before: Timestamp, namespace: str) -> dict[str, str]:
    """The restores that give back ``namespace`` as it was just before ``before``, as commands that
    run as printed: first beside the live data under a new name (the runbook's compare-then-swap),
    then in place with ``--drop``, which discards what was written to it since."""
    include = namespace if not namespace.endswith(".$cmd") else namespace.removesuffix("$cmd") + "*"
    restored_as = f"{include}_before_{before.time}_{before.inc}"  # db.* -> db.*_before_...: each one
    restore = f"sidecar restore --before-op {position(before)} --ns-include {shlex.quote(include)}"
    return {
        "restoredAs": restored_as,
        "restoreCommand": f"{restore} --ns-from {shlex.quote(include)} --ns-to {shlex.quote(restored_as)}",
        "dropCommand": f"{restore} --drop",
        "dropDiscards": (
            f"every write to {include} at or after {position(before)} (a safety backup of what it "
            "replaces is taken first; --dry-run counts them)"
        ),
    }


def _group_key(op: Operation) -> GroupKey | None:
    if op.operation == "delete":
        return ("delete", op.namespace)
    return ("drop", op.database) if op.is_drop else None


def _touches(key: GroupKey, op: Operation) -> bool:
    kind, scope = key
    if kind == "drop":
        return op.database == scope
    return scope in op.namespaces() or (op.database_wide and scope.partition(".")[0] == op.database)


@dataclass
class Item:
    """One listed operation, or a group of them (``count`` > 1)."""

    first: Operation
    last: Operation
    count: int = 1
    commands: Counter[str] = field(default_factory=Counter)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # archive, serverOplog (a group may span both)

    @classmethod
    def of(cls, op: Operation, source: str) -> Item:
        item = cls(op, op)
        item._note(op, source)
        return item

    def add(self, op: Operation, source: str) -> None:
        self.last, self.count = op, self.count + 1
        self._note(op, source)

    def _note(self, op: Operation, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)
        if op.command:
            self.commands[op.command] += 1
        if op.command == "drop" and len(self.names) < _MAX_NAMES:
            self.names.append(op.namespace)

    @property
    def namespace(self) -> str:
        if self.count > 1 and self.first.is_drop:
            return f"{self.first.database}.*"
        return self.first.namespace

    def as_json(self) -> dict[str, Any]:
        commands = {**undo(self.first.ts, self.namespace), "source": "+".join(self.sources)}
        if self.count == 1:
            return {**self.first.as_json(), **commands}
        operation = "delete" if self.first.operation == "delete" else "drop"
        first, last = self.first, self.last
        walls = [iso_utc(o.wall) if o.wall else None for o in (first, last)]
        return {
            "kind": "group",
            "operation": operation,
            "namespace": self.namespace,
            "count": self.count,
            "first": {"t": first.ts.time, "i": first.ts.inc},
            "last": {"t": last.ts.time, "i": last.ts.inc},
            "firstPosition": position(first.ts),
            "lastPosition": position(last.ts),
            "firstWall": walls[0],
            "lastWall": walls[1],
            "commands": dict(self.commands) if operation == "drop" else None,
            "collections": self.names if operation == "drop" else None,
            "summary": f"{self.count} {operation}s on {self.namespace} between {walls[0]} and {walls[1]}",
            "beforeOp": position(first.ts),
            **commands,
        }


@dataclass
class Finder:
    """Collects the items of a query from operations fed in oplog order."""

    query: FindQuery
    items: list[Item] = field(default_factory=list)
    open: dict[GroupKey, Item] = field(default_factory=dict)
    next: Timestamp | None = None  # the first hit not listed (the listing is truncated)
    source: str = ARCHIVE  # where the operations fed now come from

    @property
    def done(self) -> bool:
        """Truncated, and no listed group can grow any more."""
        return self.next is not None and not self.open

    def feed(self, op: Operation) -> None:
        self.open = {k: g for k, g in self.open.items() if op.seconds - g.last.seconds <= GROUP_GAP_SECONDS}
        if not self.query.in_scope(op):
            return
        hit = self.query.selects(op)
        key = _group_key(op) if hit and not self.query.doc_id else None
        self.open = {k: g for k, g in self.open.items() if k == key or not _touches(k, op)}
        if key is not None and key in self.open:
            self.open[key].add(op, self.source)
        elif hit and len(self.items) >= self.query.limit:
            self.next = self.next or op.ts
        elif hit:
            self.items.append(Item.of(op, self.source))
            if key is not None:
                self.open[key] = self.items[-1]


@dataclass
class _Scan:
    total: int
    opened: int = 0
    skipped: int = 0
    entries: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        read = self.opened + self.skipped
        return {
            "total": self.total,
            "opened": self.opened,
            "skipped": self.skipped,
            "unread": self.total - read,
            "unreadable": self.unreadable,
        }


def find_operations(settings: Settings, query: FindQuery) -> dict[str, Any]:
    """The listing (see the module doc and docs/pitr.md): the slices of SIDECAR_BACKUP_DIR, then the
    server's oplog after the newest stored entry (``server_oplog.py``)."""
    slices = SliceCatalog(oplog_dir(settings)).slices()
    finder, scan = Finder(query), _Scan(len(slices))
    reached_until = False
    for index, entry in enumerate(slices):
        if _past_until(query, entry):  # so is every later slice
            scan.skipped += len(slices) - index
            reached_until = True
            break
        if finder.done:  # the rest is unread
            break
        if not query.slice_may_match(entry):
            scan.skipped += 1
            continue
        scan.opened += 1
        if not _read(settings, entry, finder, scan):
            scan.skipped += len(slices) - index - 1
            reached_until = True
            break
    server = ServerOplog(after=from_json(slices[-1]["last"]) if slices else None)
    _read_server(settings, finder, server, reached_until or _archive_reaches_until(query, slices))
    return {
        "query": query.as_json(),
        "items": [item.as_json() for item in finder.items],
        "count": len(finder.items),
        "truncated": finder.next is not None,
        "next": position(finder.next) if finder.next is not None else None,
        "slices": scan.as_json(),
        "serverOplog": server.as_json(),
        "entriesRead": scan.entries,  # from the slices (serverOplog counts its own)
        "groupGapSeconds": GROUP_GAP_SECONDS,
    }


def _past_until(query: FindQuery, entry: SliceEntry) -> bool:
    """The slice starts after ``until`` given as a position (slices are in ts order)."""
    return isinstance(query.until, Timestamp) and query.slice_after_until(entry)


def _archive_reaches_until(query: FindQuery, slices: list[SliceEntry]) -> bool:
    """The newest stored entry is at or after ``until``: nothing the server adds can match."""
    if query.until is None or not slices:
        return False
    if isinstance(query.until, Timestamp):
        return from_json(slices[-1]["last"]) >= query.until
    wall = slices[-1].get("lastWall")
    return wall is not None and parse_iso(wall) > query.until


def _feed(doc: RawBSONDocument, finder: Finder) -> bool:
    """Feed one entry's operations; False once past ``until`` given as a position."""
    until = finder.query.until
    if isinstance(until, Timestamp) and doc.get("ts", until) > until:
        return False
    for op in entry_operations(doc):
        finder.feed(op)
    return True


def _read(settings: Settings, entry: SliceEntry, finder: Finder, scan: _Scan) -> bool:
    """Feed one slice's operations (until the listing is done); False once past ``until``."""
    try:
        for raw in iter_entries(settings, oplog_dir(settings) / entry["fileName"], entry):
            scan.entries += 1
            if not _feed(RawBSONDocument(raw), finder):
                return False
            if finder.done:
                break
    except (SliceError, ReplayError) as exc:  # ReplayError: an entry that is no oplog entry
        scan.unreadable.append({"fileName": entry["fileName"], "error": str(exc)})
    return True


def _read_server(settings: Settings, finder: Finder, server: ServerOplog, past_until: bool) -> None:
    """The entries the archive has not stored yet, as the slices' (``serverOplog`` items)."""
    if past_until:
        server.skipped = "the archive reaches past until"
        return
    if finder.done:
        server.skipped = "the listing is full"
        return
    finder.source = SOURCE
    until = finder.query.until if isinstance(finder.query.until, Timestamp) else None
    for doc in server_entries(settings, server, until):
        if not _feed(doc, finder) or finder.done:
            break
    server.matches = sum(SOURCE in item.sources for item in finder.items)
