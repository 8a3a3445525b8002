"""One namespace's writes of a window as chains per document, folded, then sent in rounds.

Writes to different documents commute (where no unique secondary index, cap or collation ties them
together: the caller checks), so a window's writes need only keep their order per document. A
**chain** is one document's writes in oplog order, folded where the result is the same:

- everything before its last insert, replacement or delete is dropped (those set the whole document
  whatever it was; an insert over an existing ``_id`` becomes its upsert, as in the ordered path);
- a mongod ``$v: 2`` diff after an insert or a replacement is applied here, to the document it
  gives; a diff that begins a chain is applied to the document as it was before the window, read
  with one ``$in`` query for all such chains (``needs_read``), so no update reads on its own;
- a diff after an update whose result is not known here (operators, the embedded server's fields)
  cannot be folded: ``chains`` answers None and the caller applies the namespace in order.

``rounds`` orders the folded steps for ordered ``bulk_write`` batches: round r holds the r-th step of
every chain (one step per document), inserts first, then updates, then deletes, so a window of
writes to distinct documents takes three commands, not one per run of a kind.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from bson.raw_bson import RawBSONDocument
from pymongo.operations import ReplaceOne

from sidecar.engine.replay.bson_raw import document, elements
from sidecar.engine.replay.crud import Write, WriteModel
from sidecar.engine.replay.doc_diff import apply_diff
from sidecar.engine.replay.doc_key import doc_key

WHOLE = frozenset({"insert", "replace", "delete"})
KNOWN_AFTER = WHOLE | {"delta"}  # writes whose result a diff after them can be applied to here
_RANK = {"insert": 0, "delete": 2}  # every other shape is an update (1)
Step = tuple[Write, list[WriteModel]]  # models that apply a write (or the last of those folded into it)


@dataclass
class Chain:
    """One document's writes of the window, from its last whole-document write on."""

    writes: list[Write] = field(default_factory=list)

    @property
    def needs_read(self) -> bool:
        return self.writes[0].shape == "delta"

    def steps(self, current: bytes | None) -> list[Step]:
        """The writes as folded steps; ``current`` is the document before the window (for a diff
        that begins the chain; None: there was none)."""
        out: list[Step] = []
        held: bytes | None = None  # a whole document built here, not yet sent
        last = self.writes[0]
        for at, write in enumerate(self.writes):
            if write.shape == "delta":
                if held is None:  # the chain's first write, or one after a delete (no document)
                    held = (current if at == 0 else None) or write.id_filter().raw
                held, last = apply_diff(held, write.op.o["diff"].raw), write
                continue
            if held is not None:
                out.append(_replacement(last, held))
                held = None
            following = self.writes[at + 1] if at + 1 < len(self.writes) else None
            if write.shape in ("insert", "replace") and following is not None and following.shape == "delta":
                held, last = _stored(write), write
                continue
            out.append((write, write.models()))
        if held is not None:
            out.append(_replacement(last, held))
        return out


def _replacement(write: Write, document_bytes: bytes) -> Step:
    return write, [ReplaceOne(write.id_filter(), RawBSONDocument(document_bytes), upsert=True)]


def _stored(write: Write) -> bytes:
    """The document an insert or replacement stores: its ``o``, ``_id`` first."""
    raw = write.op.o.raw
    first = next(elements(raw), None)
    if first is not None and first.name == "_id":
        return raw
    return document([*elements(write.id_filter().raw), *(i for i in elements(raw) if i.name != "_id")])


def chains(writes: list[Write]) -> dict[Hashable, Chain] | None:
    """The namespace's writes as folded chains by document, or None when they must stay in order."""
    out: dict[Hashable, Chain] = {}
    for write in writes:
        key = doc_key(write)
        if key is None:
            return None
        chain = out.get(key)
        if chain is None:
            out[key] = chain = Chain()
        elif write.shape in WHOLE:
            chain.writes.clear()
        elif write.shape == "delta" and chain.writes[-1].shape not in KNOWN_AFTER:
            return None
        chain.writes.append(write)
    return out


def rounds(steps: list[list[Step]]) -> Iterator[Step]:
    """The chains' steps in rounds (see the module doc)."""
    order = sorted(
        (r, _RANK.get(write.shape, 1), n, write, models)
        for n, chain in enumerate(steps)
        for r, (write, models) in enumerate(chain)
    )
    for _r, _rank, _n, write, models in order:
        yield write, models
