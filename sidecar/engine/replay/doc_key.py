"""Which document an oplog write changes, as the server tells documents apart by ``_id``.

``doc_key`` is the key two writes share exactly when they address one document: the ``_id``'s type
and bytes, but numbers by value (the server finds ``{_id: 1}`` with ``1.0`` or ``NumberLong(1)``).
An ``_id`` that is a document or an array has no such key here (its numbers compare by value too,
at any depth): None, and the caller keeps that namespace's writes in their order.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from decimal import Decimal

from bson.decimal128 import Decimal128

from sidecar.engine.replay.bson_raw import ARRAY, DOCUMENT, Element, elements, find
from sidecar.engine.replay.crud import UnsupportedEntry, Write

DOUBLE, INT32, INT64, DECIMAL = 0x01, 0x10, 0x12, 0x13


def _number(item: Element) -> int | float | Decimal | None:
    """The value of a numeric element (None: NaN, which equals nothing, not even itself)."""
    if item.type in (INT32, INT64):
        return int.from_bytes(item.value, "little", signed=True)
    if item.type == DOUBLE:
        value: float | Decimal = struct.unpack("<d", item.value)[0]
    else:
        value = Decimal128.from_bid(item.value).to_decimal()
    return None if value != value else value  # NaN


def id_key(item: Element) -> Hashable | None:
    """The key of an ``_id`` element (see the module doc)."""
    if item.type in (DOUBLE, INT32, INT64, DECIMAL):
        number = _number(item)
        if number is not None:
            return number
    if item.type in (DOCUMENT, ARRAY):
        return None
    return (item.type, item.value)


def doc_key(write: Write) -> Hashable | None:
    """The key of the document ``write`` changes, or None (see the module doc)."""
    source = write.op.o2 if write.op.op == "u" else write.op.o
    item = find(source.raw, "_id") if source is not None else None
    if item is None:
        raise UnsupportedEntry("the entry does not name the document's _id")
    return id_key(item)


def stored_key(document: bytes) -> Hashable | None:
    """The key of a stored document (its ``_id`` comes first)."""
    first = next(elements(document), None)
    return id_key(first) if first is not None and first.name == "_id" else None
