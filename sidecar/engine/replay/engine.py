"""The oplog replay engine: archived oplog entries applied to a restored base, up to a cut.

Two calls over the same entries (raw BSON, in oplog order: a slice's stream, an archive's oplog):

    plan = plan_replay(entries, options)        # no writes: counts, the end point, what is refused
    plan.raise_if_refused()                     # ReplayError(ts, ns, reason) of the first refusal
    result = replay(client, entries, options, cancel=..., progress=...)

``ReplayOptions`` says where to stop (``until``: every entry with ``ts <= until``, inclusive, and
``through_second(t)`` for all of second ``t``; ``before``: every entry before that one), which
namespaces and under which names (the restore's ``--nsInclude``/``--nsExclude``/``--nsFrom``/
``--nsTo``, see ``oplog_scope``) and how: ``applyOps`` batches where the server has it
(``method="auto"``), else (or with ``method="native"``) a translation of each entry into ordinary
idempotent writes and commands (``oplog_crud``, ``oplog_commands``). Transactions apply whole or
not at all (``oplog_units``).

``replay`` refuses an entry it does not understand with ``ReplayError`` before writing anything of
that entry's unit, leaving the state just before it (every earlier entry applied): callers plan the
range first so that a refused range writes nothing.
Both return counts per target namespace and operation (insert, update, delete, command names).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymongo
from bson.timestamp import Timestamp
from pymongo.errors import OperationFailure

from sidecar.engine.replay.apply import Action, ApplyOpsApplier, NativeApplier, Translator, action_kind
from sidecar.engine.replay.parallel import (
    DEFAULT_WRITERS,
    MAX_WRITERS,
    WINDOW_OPS,
    ParallelApplier,
    PartitionedApplyOps,
)
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import Cut, Reader, ReplayError, Unit, ts_text
from sidecar.engine.restore_errors import MAX_ERROR_SAMPLES, RestoreCancelled
from sidecar.progress import Progress

METHODS = ("auto", "applyOps", "native")
__all__ = [
    "ReplayError",
    "ReplayOptions",
    "ReplayPlan",
    "ReplayResult",
    "plan_replay",
    "replay",
    "through_second",
]


MAX_INC = 0xFFFFFFFF


def through_second(seconds: int) -> Timestamp:
    """The ``until`` that includes every entry of that second (``t:i`` with any ``i``)."""
    return Timestamp(seconds, MAX_INC)


@dataclass(frozen=True)
class ReplayOptions:
    until: Timestamp | None = None  # replay every entry with ts <= until (inclusive)
    before: Timestamp | None = None  # or every entry before this one
    scope: ReplayScope = field(default_factory=ReplayScope)
    method: str = "auto"  # auto (applyOps when the server has it) | applyOps | native
    writers: int = DEFAULT_WRITERS  # parallel writers of the native method (parallel.py); 0 = in oplog order
    window_ops: int = WINDOW_OPS  # at most this many writes per parallel window

    def __post_init__(self) -> None:
        Cut(self.until, self.before)  # refuses both at once
        if self.method not in METHODS:
            raise ValueError(f"method is one of {', '.join(METHODS)}, not {self.method!r}")
        if not 0 <= self.writers <= MAX_WRITERS:
            raise ValueError(f"writers is between 0 and {MAX_WRITERS}, not {self.writers}")
        if self.window_ops < 1:
            raise ValueError(f"window_ops is at least 1, not {self.window_ops}")

    @property
    def cut(self) -> Cut:
        return Cut(self.until, self.before)


@dataclass
class ReplayCounts:
    """What a pass over the range met; ``namespaces`` maps target namespace -> operation -> count."""

    entries: int = 0  # oplog entries within the cut
    bytes: int = 0
    operations: int = 0  # writes and commands (a transaction's inner operations each count)
    skipped: int = 0  # operations outside the scope, no-ops, index-build bookkeeping
    transactions: int = 0
    pending_transactions: int = 0  # begun within the cut, not committed by it: not applied
    first_ts: Timestamp | None = None
    last_ts: Timestamp | None = None  # the last entry within the cut
    stopped_at: Timestamp | None = None  # the first entry the cut left out (None: the input ended)
    namespaces: dict[str, Counter[str]] = field(default_factory=dict)

    def count(self, unit: Unit, actions: list[Action]) -> None:
        self.operations += len(actions)
        self.skipped += max(len(unit.ops) - len(actions), 0)
        self.transactions += unit.transaction
        for action in actions:
            self.namespaces.setdefault(action.target, Counter())[action_kind(action)] += 1

    def close(self, reader: Reader) -> None:
        self.entries, self.bytes = reader.entries, reader.bytes
        self.first_ts, self.last_ts, self.stopped_at = reader.first_ts, reader.last_ts, reader.stopped_at
        self.pending_transactions = reader.assembler.pending

    def as_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "bytes": self.bytes,
            "operations": self.operations,
            "skipped": self.skipped,
            "transactions": self.transactions,
            "pendingTransactions": self.pending_transactions,
            "firstTs": ts_text(self.first_ts) if self.first_ts else None,
            "lastTs": ts_text(self.last_ts) if self.last_ts else None,
            "stoppedAt": ts_text(self.stopped_at) if self.stopped_at else None,
            "namespaces": {ns: dict(sorted(ops.items())) for ns, ops in sorted(self.namespaces.items())},
        }


@dataclass
class ReplayPlan(ReplayCounts):
    refused: list[ReplayError] = field(default_factory=list)  # MAX_ERROR_SAMPLES at most
    refused_count: int = 0

    def raise_if_refused(self) -> None:
        if self.refused:
            first = self.refused[0]
            more = f" (and {self.refused_count - 1} more)" if self.refused_count > 1 else ""
            raise ReplayError(first.ts, first.ns, first.reason + more)

    def as_json(self) -> dict[str, Any]:
        out = super().as_json()
        out["refused"] = [{"ts": ts_text(e.ts), "ns": e.ns, "reason": e.reason} for e in self.refused]
        out["refusedCount"] = self.refused_count
        return out


@dataclass
class ReplayResult(ReplayCounts):
    method: str = ""
    seconds: float = 0.0
    windows_in_order: int = 0  # parallel windows applied again in oplog order after a refused write

    def as_json(self) -> dict[str, Any]:
        return {
            **super().as_json(),
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "windowsInOrder": self.windows_in_order,
        }


def _units_and_actions(
    reader: Reader,
    entries: Iterable[bytes],
    translator: Translator,
    on_refused: Callable[[ReplayError], None],
) -> Iterator[tuple[Unit, list[Action]]]:
    for unit in reader.units(entries):
        try:
            actions = translator.actions(unit)
        except ReplayError as exc:
            on_refused(exc)
            continue
        yield unit, actions


def plan_replay(entries: Iterable[bytes], options: ReplayOptions | None = None) -> ReplayPlan:
    """Read the range without writing: its counts, its end, every entry ``replay`` would refuse."""
    options = options or ReplayOptions()
    plan, reader, translator = ReplayPlan(), Reader(options.cut), Translator(options.scope)

    def refuse(exc: ReplayError) -> None:
        plan.refused_count += 1
        if len(plan.refused) < MAX_ERROR_SAMPLES:
            plan.refused.append(exc)

    try:
        for unit, actions in _units_and_actions(reader, entries, translator, refuse):
            plan.count(unit, actions)
    except ReplayError as exc:  # the stream itself is unusable past this point
        refuse(exc)
    plan.close(reader)
    return plan


def server_has_apply_ops(client: pymongo.MongoClient) -> bool:
    """Probe ``applyOps`` with nothing to apply: refused (no such command, not allowed) is False."""
    try:
        client.admin.command("applyOps", [])
    except OperationFailure:
        return False
    return True


def _method(client: pymongo.MongoClient, method: str) -> str:
    if method != "auto":
        return method
    return "applyOps" if server_has_apply_ops(client) else "native"


class AppliedProgress:
    """``progress.advance`` for the entries written, not merely handed on: a parallel applier
    (``deferred``) writes a window after taking it, and says so through ``on_batch(n)`` (operations, in
    order); an entry counts once every operation handed on up to it is written."""

    def __init__(self, progress: Progress | None, *, deferred: bool):
        self.progress, self.deferred = progress, deferred
        self.handed = self.done_ops = 0
        self.pending: deque[tuple[int, int, Timestamp | None]] = deque()  # (ops up to it, entries, ts)

    def handed_on(self, ops: int, entries: int, ts: Timestamp | None) -> None:
        if self.progress is None:
            return
        if not self.deferred:  # written as it is handed on
            self.progress.advance(entries - self.progress.done, ts)
            return
        self.handed += ops
        self.pending.append((self.handed, entries, ts))

    def written(self, ops: int) -> None:
        self.done_ops += ops
        reached = None
        while self.pending and self.pending[0][0] <= self.done_ops:
            reached = self.pending.popleft()
        if reached is not None and self.progress is not None:
            self.progress.advance(reached[1] - self.progress.done, reached[2])


def _applier(
    client: pymongo.MongoClient, method: str, options: ReplayOptions, on_batch: Callable[[int], None] | None
) -> NativeApplier | ApplyOpsApplier | ParallelApplier | PartitionedApplyOps:
    if method == "applyOps" and options.writers:
        return PartitionedApplyOps(client, options.writers, on_batch, window_ops=options.window_ops)
    if method == "applyOps":
        return ApplyOpsApplier(client)
    if options.writers:
        return ParallelApplier(client, options.writers, on_batch, window_ops=options.window_ops)
    return NativeApplier(client)


def replay(
    client: pymongo.MongoClient,
    entries: Iterable[bytes],
    options: ReplayOptions | None = None,
    *,
    cancel: threading.Event | None = None,
    progress: Progress | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Apply the entries within the cut; ``progress.documents``/``bytes`` count operations and entry bytes
    as they are read, ``progress.advance`` the entries written and the newest one's ``ts`` (see
    ``AppliedProgress``; a pass the caller began with the planned total: ``begin(phase,
    unit="entries", total=plan.entries)``), ``on_batch(n)`` hears of each batch of ``n`` operations
    once it is written (the parallel applier's windows)."""
    options = options or ReplayOptions()
    started = time.monotonic()
    result = ReplayResult(method=_method(client, options.method))
    applied = AppliedProgress(progress, deferred=bool(options.writers))

    def written(n: int) -> None:
        applied.written(n)
        if on_batch is not None:
            on_batch(n)

    applier = _applier(client, result.method, options, written)
    reader, translator = Reader(options.cut), Translator(options.scope)

    def refuse(exc: ReplayError) -> None:
        applier.flush()  # what is left is the state just before the refused entry
        raise exc

    try:
        for unit, actions in _units_and_actions(reader, entries, translator, refuse):
            if cancel is not None and cancel.is_set():
                raise RestoreCancelled()
            applier.apply(unit, actions)
            result.count(unit, actions)
            if progress is not None:
                progress.documents += len(actions)
                progress.bytes = reader.bytes
            applied.handed_on(len(actions), reader.entries, reader.last_ts)
        applier.flush()
        applied.handed_on(0, reader.entries, reader.last_ts)  # all written: the entries without writes too
        applied.written(0)
    finally:
        applier.close()
    if isinstance(applier, ParallelApplier):
        result.windows_in_order = applier.windows_in_order
    result.close(reader)
    result.seconds = time.monotonic() - started
    return result
