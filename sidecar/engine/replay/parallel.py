"""The replay applied the way a secondary applies the oplog: windows, chains per document, writers.

``ParallelApplier`` takes the same actions as ``NativeApplier`` and leaves the same documents:

- writes gather into a **window** (at most ``WINDOW_OPS`` operations, ``WINDOW_BYTES`` of entries)
  that ends at every command (a barrier: the command runs alone, after every earlier write);
- a window's writes are split over ``writers`` threads by a hash of namespace and document
  (``doc_key``), so one document's writes stay in order in one writer; each writer sends, per
  namespace, its documents' folded chains in rounds (``doc_chains``), ordered ``bulk_write``
  batches, with no read per update;
- a namespace whose documents are tied together (a unique secondary index, whose value may move
  from one document to another within the window; a capped collection, which keeps insertion order;
  a collation, under which ``_id``\\s that differ in bytes may be one; a document ``_id``) is applied
  by one writer in oplog order, the ordered path (``NativeApplier``) for that window;
- a window in which the server refuses a write (a constraint the rules above did not see) is
  applied again, whole, in oplog order (``windows_in_order`` counts them): oplog operations are
  idempotent, so that leaves what the ordered path leaves over any part of the window already
  written, or fails at the entry where the ordered path fails;
- window k+1 is read and translated while window k is written; ``on_batch(n)`` hears, in order,
  of the ``n`` operations of each window once it is written, and of each command once it has run.

``PartitionedApplyOps`` does the same for ``applyOps`` (mongod): a window's CRUD operations split
over the writers the same way (``split``), each writer sending its share as ``ApplyOpsApplier``
batches in oplog order; a transaction (one ``applyOps`` call, atomic on mongod), commands and the
embedded server's update shape go through the ordered ``ApplyOpsApplier`` between windows.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import OperationFailure

from sidecar.engine.namespaces import split_namespace
from sidecar.engine.replay.apply import Action, ApplyOpsApplier, Issued, NativeApplier, run_command
from sidecar.engine.replay.commands import NAMESPACE_EXISTS
from sidecar.engine.replay.crud import Write
from sidecar.engine.replay.doc_chains import Chain, chains, rounds
from sidecar.engine.replay.doc_key import doc_key, stored_key
from sidecar.engine.replay.units import ReplayError, Unit

DEFAULT_WRITERS = 4
MAX_WRITERS = 16
WINDOW_OPS = 5000
WINDOW_BYTES = 16 * 1024 * 1024
_RAW = CodecOptions(document_class=RawBSONDocument)
_READ_IDS = 50
_BATCH_OPS = 100_000  # a window's rounds in as few commands as the driver sends


@dataclass
class OrderRules:
    """Which target namespaces must be applied in oplog order; asked once per namespace, forgotten
    at every command (an index, a collection option or the collection itself may have changed)."""

    client: pymongo.MongoClient
    known: dict[str, bool] = field(default_factory=dict)

    def ordered(self, ns: str) -> bool:
        if ns not in self.known:
            self.known[ns] = self._tied(ns)
        return self.known[ns]

    def _tied(self, ns: str) -> bool:
        db, coll = split_namespace(ns)
        infos = list(self.client[db].list_collections(filter={"name": coll}))
        if not infos:
            return False  # created by the window's first insert: no index but _id's
        options = infos[0].get("options", {})
        if options.get("capped") or options.get("collation"):
            return True
        indexes = self.client[db][coll].list_indexes()
        return any(ix.get("unique") and ix.get("name") != "_id_" for ix in indexes)

    def forget(self) -> None:
        self.known.clear()


@dataclass
class InOrder:
    """A namespace's writes of the window, applied in oplog order (reads for mongod diffs included)."""

    writes: list[Write]

    def run(self, client: pymongo.MongoClient) -> None:
        applier = NativeApplier(client)
        applier.apply(Unit(self.writes[0].op.ts, []), list(self.writes))
        applier.flush()


@dataclass
class InRounds:
    """Some documents' chains of one namespace: one read for the diffs that begin a chain, then the
    folded steps in rounds."""

    target: str
    chains: dict[Hashable, Chain]

    def run(self, client: pymongo.MongoClient) -> None:
        current = self._read(client)
        steps = [chain.steps(current.get(key)) for key, chain in self.chains.items()]
        applier = NativeApplier(client, batch_ops=_BATCH_OPS, batch_bytes=WINDOW_BYTES)
        for write, models in rounds(steps):
            applier.add(write, models)
        applier.flush()

    def _read(self, client: pymongo.MongoClient) -> dict[Hashable, bytes]:
        ids = [chain.writes[0].id_filter()["_id"] for chain in self.chains.values() if chain.needs_read]
        if not ids:
            return {}
        db, coll = split_namespace(self.target)
        source = client[db].get_collection(coll, codec_options=_RAW)
        out = {}
        for at in range(0, len(ids), _READ_IDS):  # the embedded server's $in slows down past ~50 values
            for doc in source.find({"_id": {"$in": ids[at : at + _READ_IDS]}}):
                out[stored_key(doc.raw)] = bytes(doc.raw)
        return out


@dataclass
class Created:
    """The collection a folded-away insert or upsert would have created (its chain ends deleted)."""

    target: str

    def run(self, client: pymongo.MongoClient) -> None:
        db, coll = split_namespace(self.target)
        try:
            client[db].command("create", coll)
        except OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise


Job = InOrder | InRounds | Created


def _run_jobs(client: pymongo.MongoClient, jobs: list[Job]) -> None:
    for job in jobs:
        job.run(client)


def window_jobs(window: list[Write], rules: OrderRules, writers: int) -> list[list[Job]]:
    """The window's writes as each writer's jobs (see the module doc)."""
    by_target: dict[str, list[Write]] = {}
    for write in window:
        by_target.setdefault(write.target, []).append(write)
    jobs: list[list[Job]] = [[] for _ in range(writers)]
    for target, writes in by_target.items():
        folded = None if rules.ordered(target) else chains(writes)
        if folded is None:
            jobs[hash(target) % writers].append(InOrder(writes))
            continue
        if _creates(writes) and not any(_creates(chain.writes) for chain in folded.values()):
            jobs[hash(target) % writers].append(Created(target))
        parts: list[dict[Hashable, Chain]] = [{} for _ in range(writers)]
        for key, chain in folded.items():
            parts[hash((target, key)) % writers][key] = chain
        for writer, part in enumerate(parts):
            if part:
                jobs[writer].append(InRounds(target, part))
    return jobs


def _join(running: list[Future]) -> None:
    """Wait for every writer; then raise the first failure, if any."""
    failed = next((e for e in [f.exception() for f in running] if e is not None), None)
    if failed is not None:
        raise failed


def _creates(writes: list[Write]) -> bool:
    """Some write creates the collection when it is not there (inserts and upserts do)."""
    return any(write.shape != "delete" for write in writes)


@dataclass
class ParallelApplier:
    """Applies actions as ``NativeApplier`` does, in parallel windows (see the module doc)."""

    client: pymongo.MongoClient
    writers: int = DEFAULT_WRITERS
    on_batch: Callable[[int], None] | None = None
    window_ops: int = WINDOW_OPS
    window_bytes: int = WINDOW_BYTES
    window: list[Write] = field(default_factory=list)
    size: int = 0
    rules: OrderRules = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)
    running: list[Future] = field(default_factory=list)
    sent: list[Write] = field(default_factory=list)  # the window the running writers write
    windows_in_order: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.writers <= MAX_WRITERS:
            raise ValueError(f"writers is between 1 and {MAX_WRITERS}, not {self.writers}")
        self.rules = OrderRules(self.client)
        self.pool = ThreadPoolExecutor(self.writers, thread_name_prefix="replay-writer")

    def apply(self, unit: Unit, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Issued):
                self.flush()
                run_command(self.client, action)
                self.rules.forget()
                self._written(1)
                continue
            self.window.append(action)
            self.size += len(action.op.doc.raw)
            if len(self.window) >= self.window_ops or self.size >= self.window_bytes:
                self._send()

    def _send(self) -> None:
        """Start writing the window once the one before it is written."""
        window, self.window, self.size = self.window, [], 0
        jobs = window_jobs(window, self.rules, self.writers)
        self._wait()
        self.running = [self.pool.submit(_run_jobs, self.client, mine) for mine in jobs if mine]
        self.sent = window

    def _wait(self) -> None:
        running, self.running = self.running, []
        try:
            _join(running)
        except ReplayError:
            InOrder(self.sent).run(self.client)  # see the module doc; every writer has stopped
            self.windows_in_order += 1
        if running:
            self._written(len(self.sent))

    def _written(self, ops: int) -> None:
        if self.on_batch is not None:
            self.on_batch(ops)

    def flush(self) -> None:
        if self.window:
            self._send()
        self._wait()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def split(window: list[Write], writers: int, ordered: Callable[[str], bool]) -> list[list[Write]]:
    """The window's writes per writer, each share in oplog order: by a hash of namespace and document,
    every write of an ``ordered`` namespace (and of documents with a document ``_id``) with one writer."""
    out: list[list[Write]] = [[] for _ in range(writers)]
    for write in window:
        key = None if ordered(write.target) else doc_key(write)
        out[hash((write.target, key) if key is not None else write.target) % writers].append(write)
    return out


def _apply_ops(client: pymongo.MongoClient, writes: list[Write]) -> None:
    applier = ApplyOpsApplier(client)
    applier.apply(Unit(writes[0].op.ts, []), list(writes))
    applier.flush()


@dataclass
class PartitionedApplyOps:
    """``applyOps`` batches over parallel writers (see the module doc)."""

    client: pymongo.MongoClient
    writers: int = DEFAULT_WRITERS
    on_batch: Callable[[int], None] | None = None
    window_ops: int = WINDOW_OPS
    window: list[Write] = field(default_factory=list)
    size: int = 0
    rules: OrderRules = field(init=False)
    ordered: ApplyOpsApplier = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.rules = OrderRules(self.client)
        self.ordered = ApplyOpsApplier(self.client)
        self.pool = ThreadPoolExecutor(self.writers, thread_name_prefix="replay-applyops")

    def apply(self, unit: Unit, actions: list[Action]) -> None:
        if unit.transaction or any(isinstance(a, Issued) or a.shape == "fields" for a in actions):
            self.flush()
            self.ordered.apply(unit, actions)
            self.ordered.flush()
            if any(isinstance(a, Issued) for a in actions):
                self.rules.forget()
            if self.on_batch is not None:
                self.on_batch(len(actions))
            return
        for action in actions:
            assert isinstance(action, Write)
            self.window.append(action)
            self.size += len(action.op.doc.raw)
        if len(self.window) >= self.window_ops or self.size >= WINDOW_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.window:
            return
        window, self.window, self.size = self.window, [], 0
        shares = split(window, self.writers, self.rules.ordered)
        _join([self.pool.submit(_apply_ops, self.client, share) for share in shares if share])
        if self.on_batch is not None:
            self.on_batch(len(window))

    def close(self) -> None:
        self.ordered.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
