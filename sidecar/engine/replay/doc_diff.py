"""mongod's ``$v: 2`` update diffs ("delta" oplog entries), applied to a raw document as mongod does.

The format (mongod's src/mongo/db/update/document_diff_serialization.h and document_diff_applier.cpp):

- A document diff has up to three sections and then sub-diffs, in this order: ``d`` (fields to
  delete: ``{name: false}``), ``u`` (fields to update: ``{name: value}``), ``i`` (fields to insert),
  then one ``s<name>`` per field holding a sub-diff of that field's value.
- A sub-diff is an array diff when its first field is ``a: true``; it may then give ``l`` (the new
  length, int32), and then ``u<index>: value`` (set that element) or ``s<index>: sub-diff``, in
  ascending index order.
- Applying a document diff walks the pre-image in order: a deleted field is dropped, an updated one
  takes its new value in place, an inserted one is dropped there and appended at the end, a
  sub-diff recurses when the value is an object (document diff) or an array (array diff) and
  otherwise writes null (the diff is being re-applied over a newer value that a later entry will
  overwrite); sub-diffs of fields that are not there are ignored. Then the updated fields that were
  not found are appended, then every inserted field, each in diff order.
- Applying an array diff keeps the elements up to the new length (all of them without ``l``),
  replacing the ones named in the diff; then, while below the new length or while modifications
  remain, it appends: the value of a ``u``, null for a sub-diff (no pre-image to apply it to), null
  for an index the diff does not name (padding). So an array grows by ``u`` past its end (padded
  with nulls) or by ``l``, and shrinks by ``l``.

The ``b`` section (binary diffs of time-series bucket columns) is not replayed: time-series
collections are not restored by this engine. Pure: raw BSON in, raw BSON out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sidecar.engine.replay.bson_raw import (
    ARRAY,
    DOCUMENT,
    Element,
    RawBSONError,
    array,
    document,
    elements,
    null,
    subdocument,
)


class DiffError(ValueError):
    """Not a ``$v: 2`` diff this engine can apply."""


@dataclass
class _Sections:
    deletes: set[str] = field(default_factory=set)
    updates: dict[str, Element] = field(default_factory=dict)
    inserts: dict[str, Element] = field(default_factory=dict)
    subdiffs: dict[str, Element] = field(default_factory=dict)

    def claim(self, name: str) -> None:
        if name in self.deletes or name in self.updates or name in self.inserts or name in self.subdiffs:
            raise DiffError(f"field {name!r} appears twice in a $v: 2 diff")


def is_array_diff(diff: bytes) -> bool:
    first = next(elements(diff), None)
    return first is not None and first.name == "a"


def _sections(diff: bytes) -> _Sections:
    out = _Sections()
    for section in elements(diff):
        if section.name in ("d", "u", "i"):
            if not section.is_document:
                raise DiffError(f"the {section.name!r} section of a $v: 2 diff is not an object")
            for item in elements(section.value):
                out.claim(item.name)
                if section.name == "d":
                    out.deletes.add(item.name)
                else:
                    (out.updates if section.name == "u" else out.inserts)[item.name] = item
        elif section.name.startswith("s"):
            if not section.is_document:
                raise DiffError(f"sub-diff {section.name!r} of a $v: 2 diff is not an object")
            out.claim(section.name[1:])
            out.subdiffs[section.name[1:]] = section
        else:
            raise DiffError(f"unknown section {section.name!r} in a $v: 2 diff")
    return out


def _apply_sub(value: Element, diff: Element, name: str) -> Element:
    """A sub-diff applied to a value: recursing when the types agree, else null (see the module doc)."""
    if is_array_diff(diff.value):
        if value.type == ARRAY:
            return subdocument(name, apply_array_diff(value.value, diff.value), ARRAY)
    elif value.type == DOCUMENT:
        return subdocument(name, apply_diff(value.value, diff.value), DOCUMENT)
    return null(name)


def apply_diff(pre: bytes, diff: bytes) -> bytes:
    """The document ``pre`` (raw BSON) after the document diff ``diff`` (raw BSON)."""
    sections = _sections(diff)
    out: list[Element] = []
    placed: set[str] = set()
    for item in elements(pre):
        name = item.name
        if name in sections.deletes or name in sections.inserts:
            continue
        if name in sections.updates:
            out.append(sections.updates[name])
            placed.add(name)
        elif name in sections.subdiffs:
            out.append(_apply_sub(item, sections.subdiffs[name], name))
        else:
            out.append(item)
    out.extend(item for name, item in sections.updates.items() if name not in placed)
    out.extend(sections.inserts.values())
    return document(out)


def _array_mods(diff: bytes) -> tuple[int | None, dict[int, Element]]:
    items = iter(elements(diff))
    header = next(items, None)
    if header is None or header.name != "a" or header.value != b"\x01":
        raise DiffError("an array diff must start with a: true")
    size: int | None = None
    mods: dict[int, Element] = {}
    for item in items:
        if item.name == "l" and size is None and not mods:
            if item.type != 0x10:
                raise DiffError("the new length (l) of an array diff must be an int32")
            size = int.from_bytes(item.value, "little", signed=True)
            continue
        kind, digits = item.name[:1], item.name[1:]
        if kind not in ("u", "s") or not digits.isdigit() or (kind == "s" and not item.is_document):
            raise DiffError(f"unexpected field {item.name!r} in an array diff")
        index = int(digits)
        if index in mods or (mods and index < max(mods)):
            raise DiffError(f"array diff indexes out of order at {item.name!r}")
        mods[index] = item
    if size is not None and (size < 0 or any(i >= size for i in mods)):
        raise DiffError("an array diff modifies an index at or past its new length")
    return size, mods


def _array_values(pre: bytes, size: int | None, mods: dict[int, Element]) -> Iterator[Element]:
    index = 0
    for item in elements(pre):
        if size is not None and index >= size:
            break
        mod = mods.get(index)
        if mod is None:
            yield item
        elif mod.name.startswith("u"):
            yield mod
        else:
            yield _apply_sub(item, mod, item.name)
        index += 1
    end = size if size is not None else (max(mods) + 1 if mods else 0)
    while index < end:
        mod = mods.get(index)
        yield mod if mod is not None and mod.name.startswith("u") else null(str(index))
        index += 1


def apply_array_diff(pre: bytes, diff: bytes) -> bytes:
    """The array ``pre`` (raw BSON, as a document value) after the array diff ``diff``."""
    size, mods = _array_mods(diff)
    return array(_array_values(pre, size, mods))


def validate_diff(diff: bytes) -> None:
    """Raise DiffError unless ``diff`` is a well-formed document diff, down to its deepest sub-diff."""
    try:
        if next(elements(diff), None) is None:
            raise DiffError("an empty $v: 2 diff")
        for sub in _sections(diff).subdiffs.values():
            _validate_sub(sub.value)
    except RawBSONError as exc:
        raise DiffError(str(exc)) from None


def _validate_sub(diff: bytes) -> None:
    if not is_array_diff(diff):
        validate_diff(diff)
        return
    _, mods = _array_mods(diff)
    for mod in mods.values():
        if mod.name.startswith("s"):
            _validate_sub(mod.value)
