"""What ``sidecar oplog find`` and ``GET /api/backup/oplog`` look for, checked once for both.

- ``ns``: namespace patterns (``*`` matches anything, as ``--ns-include``); a pattern without a dot is
  a database (``maekcord`` = ``maekcord.*``). A command matches by the collection it acts on, a
  rename by either name, ``dropDatabase`` by its database.
- ``op``: insert, update, delete or command.
- ``since``/``until`` (inclusive): ``t:i`` compares with the entry's ``ts``; a time (``time_input``:
  ISO-8601, ``now-5m``, epoch seconds) with its wall time (milliseconds, as shown).
- ``id``: 24 hex digits are an ObjectId, a whole number an integer (any BSON number type equal to
  it), anything else a string; quotes force a string (``'"42"'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from sidecar.engine.namespaces import matches_any
from sidecar.pitr.find.ops import OPERATIONS, Operation, id_json, position
from sidecar.pitr.optime import from_json
from sidecar.pitr.record.slices import SliceEntry
from sidecar.text import iso_utc
from sidecar.time_input import Point, parse_iso, parse_point

OP_CHOICES = tuple(OPERATIONS.values())
DEFAULT_LIMIT, MAX_LIMIT = 100, 10000
_NS = re.compile(r"[^.\s]+(\..+)?")


class FindError(ValueError):
    """A bad query; ``parameter`` names what is wrong (ns, op, since, until, id, limit)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter


def parse_id(text: str) -> Any:
    """ObjectId (24 hex digits), else int (a whole number), else the string; '"..."' is a string."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if re.fullmatch(r"[0-9a-fA-F]{24}", text):
        return ObjectId(text)
    if re.fullmatch(r"-?[0-9]{1,19}", text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    return text


def _point(parameter: str, text: str | None, tz: str | None) -> Point | None:
    if text is None:
        return None
    try:
        return parse_point(text, tz)
    except ValueError as exc:
        raise FindError(parameter, str(exc)) from None


def _pattern(text: str) -> str:
    if not text or len(text) > 255 or not _NS.fullmatch(text):
        raise FindError("ns", f"{text[:80]!r} is not a namespace pattern like db.coll, db.* or *.patients")
    return text if "." in text else f"{text}.*"


def _point_text(point: Point | None) -> str | None:
    if point is None:
        return None
    return position(point) if isinstance(point, Timestamp) else iso_utc(point)


def _earlier(a: Point, b: Point) -> bool:
    """``a`` is before ``b``; a position and a time are not compared (wall time and ts may differ)."""
    if isinstance(a, Timestamp) != isinstance(b, Timestamp):
        return False
    return a < b  # type: ignore[operator]


@dataclass(frozen=True)
class FindQuery:
    patterns: tuple[str, ...] = ()
    op: str | None = None
    since: Point | None = None
    until: Point | None = None
    doc_id: tuple[Any, ...] = ()  # () or (the _id,)
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(
        cls,
        ns: list[str] | tuple[str, ...] = (),
        op: str | None = None,
        since: str | None = None,
        until: str | None = None,
        doc_id: str | None = None,
        limit: int = DEFAULT_LIMIT,
        tz: str | None = None,
    ) -> FindQuery:
        """The query from its text form (``tz`` reads a time without a zone); FindError names the bad
        parameter."""
        if op is not None and op not in OP_CHOICES:
            raise FindError("op", f"must be one of {', '.join(OP_CHOICES)}, got {op[:40]!r}")
        if not 1 <= limit <= MAX_LIMIT:
            raise FindError("limit", f"must be between 1 and {MAX_LIMIT}, got {limit}")
        if doc_id is not None and not 1 <= len(doc_id) <= 1024:
            raise FindError("id", "must be 1 to 1024 characters")
        query = cls(
            patterns=tuple(_pattern(p) for p in ns),
            op=op,
            since=_point("since", since, tz),
            until=_point("until", until, tz),
            doc_id=() if doc_id is None else (parse_id(doc_id),),
            limit=limit,
        )
        if query.since is not None and query.until is not None and _earlier(query.until, query.since):
            raise FindError("until", f"{until} is before since ({since})")
        return query

    def as_json(self) -> dict[str, Any]:
        return {
            "ns": list(self.patterns),
            "op": self.op,
            "since": _point_text(self.since),
            "until": _point_text(self.until),
            "id": id_json(self.doc_id[0]) if self.doc_id else None,
            "limit": self.limit,
        }

    # -- operations ------------------------------------------------------------------------------

    def in_scope(self, op: Operation) -> bool:
        """By namespace and time: the operations whose order decides the groups."""
        return self._namespace_matches(op) and not self.before_since(op) and not self.after_until(op)

    def selects(self, op: Operation) -> bool:
        """In scope, and of the operation and ``_id`` asked for: a hit."""
        if self.op is not None and op.operation != self.op:
            return False
        return not self.doc_id or (op.has_id and _same_id(op.doc_id, self.doc_id[0]))

    def _namespace_matches(self, op: Operation) -> bool:
        if not self.patterns:
            return True
        if op.database_wide:
            return matches_any(op.database, (p.partition(".")[0] for p in self.patterns))
        return any(self._named(n) for n in op.namespaces())

    def before_since(self, op: Operation) -> bool:
        return self.since is not None and _before(op, self.since)

    def after_until(self, op: Operation) -> bool:
        return self.until is not None and _after(op, self.until)

    # -- slices (from the catalog, without opening them) --------------------------------------------

    def slice_after_until(self, entry: SliceEntry) -> bool:
        """Every entry of the slice (and, with a position, of every later one) is after ``until``."""
        if self.until is None:
            return False
        if isinstance(self.until, Timestamp):
            return from_json(entry["first"]) > self.until
        wall = entry.get("firstWall")
        return wall is not None and parse_iso(wall) > self.until

    def slice_may_match(self, entry: SliceEntry) -> bool:
        """By its time bounds and namespaces (a command may act on any namespace: ``db.$cmd`` counts)."""
        if self.slice_after_until(entry) or self._slice_before_since(entry):
            return False
        keys = [k for k in entry.get("namespaces", {}) if k]
        commands = [k for k in keys if k.endswith(".$cmd")]
        if self.op == "command":
            return bool(commands)
        return bool(commands) or any(self._named(k) for k in keys)

    def _named(self, ns: str) -> bool:
        return not self.patterns or matches_any(ns, self.patterns)

    def _slice_before_since(self, entry: SliceEntry) -> bool:
        if self.since is None:
            return False
        if isinstance(self.since, Timestamp):
            return from_json(entry["last"]) < self.since
        wall = entry.get("lastWall")
        return wall is not None and parse_iso(wall) < self.since


def _before(op: Operation, point: Point) -> bool:
    if isinstance(point, Timestamp):
        return op.ts < point
    return op.wall < point if op.wall is not None else op.ts.time < int(point.timestamp())


def _after(op: Operation, point: Point) -> bool:
    if isinstance(point, Timestamp):
        return op.ts > point
    return op.wall > point if op.wall is not None else op.ts.time > int(point.timestamp())


def _same_id(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return isinstance(value, int | float) and not isinstance(value, bool) and value == wanted
    return type(value) is type(wanted) and value == wanted
