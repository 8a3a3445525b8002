"""Raw oplog entries into the units a replay applies whole: the cut, transactions, nested applyOps.

A **unit** is what must be applied as a whole or not at all: one plain entry; the operations of a
mongod transaction (one ``applyOps`` command entry, or the ``partialTxn`` chain of a large
transaction ended by its final ``applyOps`` or, when prepared, by ``commitTransaction``), taken at
the time of the entry that commits it; or the entries the embedded server writes for one
transaction (same ``lsid`` and ``txnNumber``, one shared ``ts``, no ``stmtId``: mongod's retryable
writes carry one and are plain entries). Entries that only begin a transaction are held; a
transaction whose commit is not reached by the cut is never applied (``pending`` tells how many),
one aborted is dropped. The input must not end inside the embedded server's group of one
transaction's entries (PITR slices never do).

**The cut** (``Cut``): every entry with ``ts <= until`` (inclusive), or every entry before the one
at ``before``. Since the entries of one embedded transaction share one ``ts`` and a mongod
transaction counts at its commit, no cut falls inside a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar.engine.restore_errors import RestoreError

_NULL_TS = Timestamp(0, 0)
APPLIED_SEPARATELY = 1  # multiOpType of mongod's applyOps entries of batched retryable writes


def ts_text(ts: Timestamp | None) -> str:
    return f"{ts.time}:{ts.inc}" if ts is not None else "-"


class ReplayError(RestoreError):
    """An oplog entry that cannot be replayed (or failed to), with its ``ts`` and namespace."""

    def __init__(self, ts: Timestamp | None, ns: str, reason: str):
        super().__init__(f"oplog entry {ts_text(ts)} on {ns or '-'}: {reason}")
        self.ts, self.ns, self.reason = ts, ns, reason


@dataclass(frozen=True)
class OplogOp:
    """One operation: an oplog entry, or one operation nested in an ``applyOps`` entry (whose ``ts``
    it takes)."""

    ts: Timestamp
    doc: RawBSONDocument

    @property
    def op(self) -> str:
        return str(self.doc.get("op", ""))

    @property
    def ns(self) -> str:
        return str(self.doc.get("ns", ""))

    @property
    def o(self) -> RawBSONDocument:
        value = self.doc.get("o")
        if not isinstance(value, RawBSONDocument):
            raise ReplayError(self.ts, self.ns, "the entry has no 'o' document")
        return value

    @property
    def o2(self) -> RawBSONDocument | None:
        value = self.doc.get("o2")
        return value if isinstance(value, RawBSONDocument) else None

    @property
    def command(self) -> str:
        """The command's name (the first field of ``o``) of a ``c`` entry, else ''."""
        if self.op != "c":
            return ""
        return next(iter(self.o), "")


@dataclass
class Unit:
    """Operations applied as a whole, at ``ts``; ``transaction`` when they are one."""

    ts: Timestamp
    ops: list[OplogOp]
    transaction: bool = False


@dataclass(frozen=True)
class Cut:
    """Where a replay stops: after every entry with ``ts <= until``, or just before ``before``."""

    until: Timestamp | None = None
    before: Timestamp | None = None

    def __post_init__(self) -> None:
        if self.until is not None and self.before is not None:
            raise ValueError("give until or before, not both")

    def excludes(self, ts: Timestamp) -> bool:
        if self.until is not None and ts > self.until:
            return True
        return self.before is not None and ts >= self.before


def flatten(ts: Timestamp, doc: RawBSONDocument) -> Iterator[OplogOp]:
    """The operations of an entry: those nested in ``applyOps`` (at any depth), or the entry."""
    op = OplogOp(ts, doc)
    if op.command == "applyOps":
        nested = op.o["applyOps"]
        if not isinstance(nested, list) or not all(isinstance(inner, RawBSONDocument) for inner in nested):
            raise ReplayError(ts, op.ns, "an applyOps entry whose applyOps is not a list of operations")
        for inner in nested:
            yield from flatten(ts, inner)
    else:
        yield op


def _session_key(doc: RawBSONDocument) -> tuple[bytes, int] | None:
    lsid, txn = doc.get("lsid"), doc.get("txnNumber")
    if not isinstance(lsid, RawBSONDocument) or txn is None:
        return None
    return bytes(lsid.raw), int(txn)


@dataclass
class _Held:
    ops: list[OplogOp] = field(default_factory=list)
    last: Timestamp = _NULL_TS  # the ts of the newest entry of the chain
    first: Timestamp = _NULL_TS


@dataclass
class Assembler:
    """Feeds entries in oplog order, yields ``Unit``s (see the module doc)."""

    held: dict[tuple[bytes, int], _Held] = field(default_factory=dict)
    group: Unit | None = None
    group_key: tuple[bytes, int, Timestamp] | None = None

    def feed(self, ts: Timestamp, doc: RawBSONDocument) -> Iterator[Unit]:
        key = _session_key(doc)
        kind = OplogOp(ts, doc)
        if key is not None and kind.op in ("i", "u", "d") and "stmtId" not in doc:
            group_key = (*key, ts)
            if self.group is not None and self.group_key == group_key:
                self.group.ops.append(kind)
                return
            yield from self.finish()
            self.group, self.group_key = Unit(ts, [kind], transaction=True), group_key
            return
        yield from self.finish()
        if kind.command == "applyOps":
            unit = self._apply_ops(ts, doc, key)
            if unit is not None:
                yield unit
        elif kind.command in ("commitTransaction", "abortTransaction"):
            unit = self._end_prepared(kind, key)
            if unit is not None:
                yield unit
        else:
            yield Unit(ts, [kind])

    def finish(self) -> Iterator[Unit]:
        """The embedded server's transaction being collected, now complete."""
        if self.group is not None:
            yield self.group
        self.group, self.group_key = None, None

    @property
    def pending(self) -> int:
        """Transactions begun (partial or prepared entries) whose commit has not been fed."""
        return len(self.held)

    def _apply_ops(self, ts: Timestamp, doc: RawBSONDocument, key: tuple[bytes, int] | None) -> Unit | None:
        obj = doc["o"]
        ops = list(flatten(ts, doc))
        if key is None or doc.get("multiOpType") == APPLIED_SEPARATELY:
            # applyOps run as a command, or mongod's batch of retryable writes: not a transaction
            return Unit(ts, ops)
        held = self._chain(ts, doc, key)
        if obj.get("partialTxn") or obj.get("prepare"):
            held.ops.extend(ops)
            held.last = ts
            self.held[key] = held
            return None
        self.held.pop(key, None)
        return Unit(ts, held.ops + ops, transaction=True)

    def _chain(self, ts: Timestamp, doc: RawBSONDocument, key: tuple[bytes, int]) -> _Held:
        """The transaction's entries so far, checked against this entry's ``prevOpTime``."""
        prev = doc.get("prevOpTime")
        prev_ts = prev.get("ts") if isinstance(prev, RawBSONDocument) else None
        held = self.held.get(key)
        if held is None:
            if prev_ts is not None and prev_ts != _NULL_TS:
                raise ReplayError(
                    ts,
                    str(doc.get("ns", "")),
                    f"a transaction entry whose previous entry ({ts_text(prev_ts)}) is not in the replayed "
                    "range: the transaction began before it",
                )
            return _Held(first=ts)
        if prev_ts is not None and prev_ts != held.last:
            raise ReplayError(
                ts,
                str(doc.get("ns", "")),
                f"a transaction entry that follows {ts_text(prev_ts)}, but the previous entry of its "
                f"transaction is {ts_text(held.last)}",
            )
        return held

    def _end_prepared(self, op: OplogOp, key: tuple[bytes, int] | None) -> Unit | None:
        held = self.held.pop(key, None) if key is not None else None
        if op.command == "abortTransaction":
            return None
        if held is None:
            raise ReplayError(
                op.ts, op.ns, "commitTransaction of a prepared transaction that is not in the replayed range"
            )
        return Unit(op.ts, held.ops, transaction=True)


@dataclass
class Reader:
    """Raw entries within ``cut``, in units; counts what it read and where it stopped."""

    cut: Cut = field(default_factory=Cut)
    entries: int = 0
    bytes: int = 0
    first_ts: Timestamp | None = None
    last_ts: Timestamp | None = None
    stopped_at: Timestamp | None = None  # the first entry the cut left out
    assembler: Assembler = field(default_factory=Assembler)

    def units(self, raw_entries: Iterable[bytes]) -> Iterator[Unit]:
        for raw in raw_entries:
            doc = RawBSONDocument(bytes(raw))
            ts = doc.get("ts")
            if not isinstance(ts, Timestamp):
                raise ReplayError(None, str(doc.get("ns", "")), f"entry {self.entries + 1} has no timestamp")
            if self.last_ts is not None and ts < self.last_ts:
                raise ReplayError(ts, str(doc.get("ns", "")), f"out of order (after {ts_text(self.last_ts)})")
            if self.cut.excludes(ts):
                self.stopped_at = ts
                break
            self.entries += 1
            self.bytes += len(raw)
            self.first_ts = self.first_ts or ts
            self.last_ts = ts
            yield from self.assembler.feed(ts, doc)
        yield from self.assembler.finish()
