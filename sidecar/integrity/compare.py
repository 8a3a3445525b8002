"""The one comparison of collections' options and indexes, shared by the restore drill (the server's
copy against the archive's metadata) and the pitr level (the replayed set against the next base).
Numbers compare as floats (int, Int64 and double alike); an index's key keeps its order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def comparable(value: Any) -> Any:
    """A value as comparable facts: numbers as floats (int, Int64 and double alike), mappings as dicts."""
    if isinstance(value, Mapping):
        return {str(k): comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def index_signature(spec: Mapping[str, Any]) -> dict[str, Any]:
    """An index as comparable facts: its key in order, its options in any order, no v or ns."""
    out = {k: comparable(v) for k, v in spec.items() if k not in ("v", "ns", "key", "entryFormat")}
    out["key"] = [(str(k), comparable(v)) for k, v in spec.get("key", {}).items()]
    return out


def index_signatures(specs: Any) -> dict[str, dict[str, Any]]:
    """Index name -> its signature, for the specs a server lists or an archive's metadata holds."""
    return {str(ix["name"]): index_signature(ix) for ix in specs}


@dataclass(frozen=True)
class Wording:
    """How a comparison names its two sides in its problems; each takes ns, name, have and want."""

    missing: str  # the index is expected and not there
    unexpected: str  # there and not expected
    differs: str


def index_differences(
    ns: str, have: Mapping[str, Any], want: Mapping[str, Any], wording: Wording
) -> list[str]:
    """The differences between two sets of index signatures (name -> signature), in name order."""
    problems = []
    for name in sorted(set(have) | set(want)):
        if name not in have:
            template = wording.missing
        elif name not in want:
            template = wording.unexpected
        elif have[name] != want[name]:
            template = wording.differs
        else:
            continue
        problems.append(template.format(ns=ns, name=name, have=have.get(name), want=want.get(name)))
    return problems
