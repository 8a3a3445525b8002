"""BSON documents as raw elements: split, look up and rebuild documents without decoding their values.

The oplog replay takes values from oplog entries and documents from the server and writes them back
unchanged, so nothing here turns a value into a Python object: an element is its type byte, its name
and its bytes, and a new document is the concatenation of elements. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

STRING = 0x02
DOCUMENT = 0x03
ARRAY = 0x04
NULL = 0x0A
_INT32 = struct.Struct("<i")
# Value sizes by type byte; types absent here carry their size (an int32) in the value.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
_FIXED.update({0x7F: 0, 0xFF: 0})
_SIZED = {0x02: 4, 0x0D: 4, 0x0E: 4, 0x05: 5}  # string-like: int32 length + that many bytes (binary: +1)
_SELF_SIZED = {DOCUMENT, ARRAY, 0x0F}  # the int32 counts itself


class RawBSONError(ValueError):
    """The bytes are not a well-formed BSON document."""


@dataclass(frozen=True)
class Element:
    type: int
    name: str
    data: bytes  # the whole element: type byte, name, value
    value_at: int  # where the value starts in ``data``

    @property
    def value(self) -> bytes:
        return self.data[self.value_at :]

    def renamed(self, name: str) -> Element:
        return element(self.type, name, self.value)

    @property
    def is_document(self) -> bool:
        return self.type == DOCUMENT


def _value_size(data: bytes, kind: int, at: int) -> int:
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in _SIZED:
        return _SIZED[kind] + _INT32.unpack_from(data, at)[0]
    if kind in _SELF_SIZED:
        return _INT32.unpack_from(data, at)[0]
    if kind == 0x0B:  # regex: two C strings
        second = data.index(b"\0", data.index(b"\0", at) + 1)
        return second + 1 - at
    if kind == 0x0C:  # DBPointer: string + ObjectId
        return 4 + _INT32.unpack_from(data, at)[0] + 12
    raise RawBSONError(f"unknown BSON type 0x{kind:02x}")


def elements(document: bytes) -> Iterator[Element]:
    """The top-level elements of ``document``, in order."""
    data = bytes(document)
    try:
        end = _INT32.unpack_from(data, 0)[0] - 1
        at = 4
        while at < end:
            kind = data[at]
            name_end = data.index(b"\0", at + 1)
            value_at = name_end + 1
            size = _value_size(data, kind, value_at)
            stop = value_at + size
            if size < 0 or stop > end:
                raise RawBSONError("an element runs past the end of its document")
            yield Element(
                kind, data[at + 1 : name_end].decode("utf-8", "surrogateescape"), data[at:stop], value_at - at
            )
            at = stop
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, RawBSONError):
            raise
        raise RawBSONError(f"malformed BSON document: {exc}") from None


def element(kind: int, name: str, value: bytes) -> Element:
    head = bytes([kind]) + name.encode("utf-8", "surrogateescape") + b"\0"
    return Element(kind, name, head + value, len(head))


def string(name: str, text: str) -> Element:
    data = text.encode("utf-8", "surrogateescape") + b"\0"
    return element(STRING, name, _INT32.pack(len(data)) + data)


def document(items: Iterable[Element]) -> bytes:
    """A document of ``items`` in order."""
    body = b"".join(e.data for e in items)
    return _INT32.pack(len(body) + 5) + body + b"\0"


def array(values: Iterable[Element]) -> bytes:
    """An array (as a document value) of ``values``, renamed 0, 1, 2..."""
    return document(v.renamed(str(i)) for i, v in enumerate(values))


def null(name: str) -> Element:
    return element(NULL, name, b"")


def subdocument(name: str, body: bytes, kind: int = DOCUMENT) -> Element:
    return element(kind, name, body)


def find(document_bytes: bytes, name: str) -> Element | None:
    for item in elements(document_bytes):
        if item.name == name:
            return item
    return None
