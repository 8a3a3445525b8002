"""Units of oplog operations into actions (``Translator``), and the two ways of applying them.

``Translator.actions`` turns a unit into ``Write``s (``oplog_crud``) and ``Command``s
(``oplog_commands``, ``Issued`` with the entry they come from) on the target namespaces, or raises
``ReplayError`` (with the entry's ts and namespace) for anything it does not understand; it does no
I/O, so a plan pass finds those first.

``NativeApplier`` applies writes as ordered ``bulk_write`` batches per namespace (validation
bypassed, as oplog application does), reading the document first for a mongod ``$v: 2`` diff, and
runs commands between batches. ``ApplyOpsApplier`` sends the CRUD operations, renamed and without
their UUIDs, through ``applyOps`` in batches, a transaction's in one call (what
``mongorestore --oplogReplay`` does), and leaves commands, and updates in the embedded server's
shape (which ``applyOps`` does not know), to a native applier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import BulkWriteError, OperationFailure
from pymongo.operations import InsertOne

from sidecar.engine.namespaces import split_namespace
from sidecar.engine.replay.bson_raw import document, elements, string
from sidecar.engine.replay.commands import Command, CommandTranslator
from sidecar.engine.replay.crud import DUPLICATE_KEY, UnsupportedEntry, Write, WriteModel, crud_write
from sidecar.engine.replay.scope import ReplayScope
from sidecar.engine.replay.units import OplogOp, ReplayError, Unit
from sidecar.engine.restore_errors import server_message


@dataclass(frozen=True)
class Issued:
    """A command and the entry it comes from."""

    command: Command
    op: OplogOp

    @property
    def target(self) -> str:
        return self.command.target


Action = Write | Issued
IGNORED_OPS = frozenset({"n", "cd", "ci", "cu", "km"})  # no-ops and container ops (mongorestore's list)
_RAW = CodecOptions(document_class=RawBSONDocument)


def action_kind(action: Action) -> str:
    """insert | update | delete, or the command's name: what the counts are kept by."""
    return action.kind if isinstance(action, Write) else action.command.name


@dataclass
class Translator:
    scope: ReplayScope
    commands: CommandTranslator = field(init=False)
    targets: dict[str, str | None] = field(default_factory=dict)  # the scope's answers, asked once per ns

    def __post_init__(self) -> None:
        self.commands = CommandTranslator(self.scope)

    def target(self, ns: str) -> str | None:
        if ns not in self.targets:
            self.targets[ns] = self.scope.target(ns)
        return self.targets[ns]

    def actions(self, unit: Unit) -> list[Action]:
        out: list[Action] = []
        for op in unit.ops:
            try:
                out.extend(self._actions(op))
            except UnsupportedEntry as exc:
                raise ReplayError(op.ts, op.ns, str(exc)) from None
        return out

    def _actions(self, op: OplogOp) -> list[Action]:
        kind = op.op
        if kind in IGNORED_OPS:
            return []
        if kind in ("i", "u", "d"):
            target = self.target(op.ns)
            if target is None:
                return []
            self.commands.written.add(op.ns)
            return [crud_write(op, target)]
        if kind == "c":
            if op.command in ("commitTransaction", "applyOps"):  # only reach here malformed
                raise UnsupportedEntry(f"a {op.command} entry out of place")
            return [Issued(command, op) for command in self.commands.commands(op)]
        raise UnsupportedEntry(f"unknown oplog op {kind!r}")


def run_command(client: pymongo.MongoClient, issued: Issued) -> None:
    command, op = issued.command, issued.op
    try:
        client[command.db].command(SON(command.body))  # the driver adds fields to what it sends
    except OperationFailure as exc:
        if exc.code not in command.accepted:
            raise ReplayError(op.ts, op.ns, f"{command.name} failed: {server_message(exc)}") from None


@dataclass
class NativeApplier:
    """Writes in ordered batches (one namespace each), commands between them."""

    client: pymongo.MongoClient
    batch_ops: int = 1000
    batch_bytes: int = 8 * 1024 * 1024
    target: str = ""
    models: list[WriteModel] = field(default_factory=list)
    sources: list[Write] = field(default_factory=list)  # the write of each model
    size: int = 0

    def apply(self, unit: Unit, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Issued):
                self.flush()
                run_command(self.client, action)
                continue
            current = None
            if action.needs_current:
                self.flush()
                current = self._current(action)
            self.add(action, action.models(current))

    def add(self, write: Write, models: list[WriteModel]) -> None:
        """Queue the models that apply ``write``, in order after those queued before."""
        if write.target != self.target:
            self.flush()
            self.target = write.target
        for model in models:
            self.models.append(model)
            self.sources.append(write)
        self.size += len(write.op.doc.raw)
        if len(self.models) >= self.batch_ops or self.size >= self.batch_bytes:
            self.flush()

    def close(self) -> None:
        """Nothing to let go of (the parallel applier's writers are)."""

    def _current(self, write: Write) -> bytes | None:
        db, coll = split_namespace(write.target)
        found = self.client[db].get_collection(coll, codec_options=_RAW).find_one(write.id_filter())
        return bytes(found.raw) if found is not None else None

    def flush(self) -> None:
        if not self.models:
            return
        models, sources = self.models, self.sources
        self.models, self.sources, self.size = [], [], 0
        while models:
            failed = self._write(models, sources)
            if failed is None:
                return
            # an insert whose _id is there: the rest of the batch goes on from its upsert
            models = sources[failed].upsert() + models[failed + 1 :]
            sources = sources[failed:]

    def _write(self, models: list[WriteModel], sources: list[Write]) -> int | None:
        """Write the batch; the index of an insert refused for a duplicate key, else None."""
        db, coll = split_namespace(self.target)
        try:
            self.client[db][coll].bulk_write(models, ordered=True, bypass_document_validation=True)
            return None
        except BulkWriteError as exc:
            error = (exc.details.get("writeErrors") or [{}])[0]
            index = min(int(error.get("index", 0)), len(sources) - 1)
            if error.get("code") == DUPLICATE_KEY and isinstance(models[index], InsertOne):
                return index
            op = sources[index].op
            raise ReplayError(op.ts, op.ns, f"write to {self.target} failed: {error.get('errmsg')}") from None
        except OperationFailure as exc:
            op = sources[0].op
            raise ReplayError(op.ts, op.ns, f"write to {self.target} failed: {server_message(exc)}") from None


def apply_ops_entry(write: Write) -> RawBSONDocument:
    """The operation as ``applyOps`` takes it: under its target namespace, without its UUID."""
    items = [e for e in elements(write.op.doc.raw) if e.name not in ("ui", "ns")]
    items.append(string("ns", write.target))
    return RawBSONDocument(document(items))


@dataclass
class ApplyOpsApplier:
    """CRUD operations through ``applyOps`` batches (a transaction's in one); commands, and updates in
    the embedded server's shape (entries it wrote, replayed into mongod), natively."""

    client: pymongo.MongoClient
    batch_ops: int = 500
    batch_bytes: int = 8 * 1024 * 1024
    ops: list[RawBSONDocument] = field(default_factory=list)
    sources: list[OplogOp] = field(default_factory=list)
    size: int = 0
    native: NativeApplier = field(init=False)

    def __post_init__(self) -> None:
        self.native = NativeApplier(self.client)

    def apply(self, unit: Unit, actions: list[Action]) -> None:
        if unit.transaction:
            self.flush()
        for action in actions:
            if isinstance(action, Issued) or action.shape == "fields":
                # commands, and the embedded server's update shape that applyOps does not know
                self.flush()
                self.native.apply(unit, [action])
                self.native.flush()
                continue
            self.ops.append(apply_ops_entry(action))
            self.sources.append(action.op)
            self.size += len(action.op.doc.raw)
            full = len(self.ops) >= self.batch_ops or self.size >= self.batch_bytes
            if full and not unit.transaction:
                self.flush()
        if unit.transaction:
            self.flush()

    def close(self) -> None:
        self.native.close()

    def flush(self) -> None:
        if not self.ops:
            return
        ops, sources = self.ops, self.sources
        self.ops, self.sources, self.size = [], [], 0
        try:
            self.client.admin.command(SON([("applyOps", ops)]))
        except OperationFailure as exc:
            first = sources[0]
            raise ReplayError(
                first.ts, first.ns, f"applyOps of the batch starting here failed: {server_message(exc)}"
            ) from None
