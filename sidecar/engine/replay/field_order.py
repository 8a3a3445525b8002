"""The order in which MongoDB 5.0 and later apply the paths of one update, and so append new fields.

MongoDB's documented rule (Update Operators, "Behavior"): fields with string names are processed in
lexicographic order, fields with numeric names in numeric order, level by level, whatever the order
in which the update lists its operators and paths. mongod compares two names as byte strings unless
both start with a digit and neither is zero-padded; those go by length first (``9`` before ``10``).

An entry whose own shape fixes the order (mongod's ``$v: 2`` diff sections) needs none of this; the
embedded server's ``updatedFields`` lists paths in an order of its own, so the replay sorts them.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.engine.replay.bson_raw import Element

_DIGITS = frozenset("0123456789")


def _name_key(name: str) -> tuple[int, int, str]:
    """A sort key that orders two field names as mongod's path comparator does."""
    if name[:1] in _DIGITS:
        # "0" sorts before every zero-padded name ("05"), which sorts before "1": one length group.
        padded = name.startswith("0") and len(name) > 1
        return (1, 1 if padded else len(name), name)
    return (0 if name < "0" else 2, 0, name)


def path_key(path: str) -> tuple[tuple[int, int, str], ...]:
    """The sort key of a dotted path: its parts, each by ``_name_key`` (level by level)."""
    return tuple(_name_key(part) for part in path.split("."))


def update_order(items: Iterable[Element]) -> list[Element]:
    """The ``$set`` elements (named by dotted path) in the order MongoDB 5.0+ would apply them."""
    return sorted(items, key=lambda item: path_key(item.name))
