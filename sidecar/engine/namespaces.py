"""Namespaces (``db.collection``) as every layer matches and renames them: mongodump's and
mongorestore's ``*`` patterns (--nsInclude/--nsExclude, --nsFrom/--nsTo), the databases a restore
never writes, and the names MongoDB refuses. The dump, the restore plan, the replay's scope, the
proofs' scratch sets and ``oplog find`` all use these.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

from sidecar.engine.scratch_names import is_scratch_database

SKIPPED_DATABASES = frozenset({"local", "config"})
MAX_DATABASE_NAME_BYTES = 63


def split_namespace(ns: str) -> tuple[str, str]:
    """(database, collection) of ``db.collection``."""
    db, _, coll = ns.partition(".")
    return db, coll


def is_internal(ns: str) -> bool:
    """A namespace the restore never writes: local/config, a proof's scratch database, system
    collections but system.js."""
    db, _, coll = ns.partition(".")
    if ns.startswith("__mdb_internal") or db in SKIPPED_DATABASES or is_scratch_database(db):
        return True
    return coll.startswith("system.") and coll != "system.js"


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """``name`` matches one of mongodump's ``*`` patterns (``*`` within and across db.coll)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def namespace_matches(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """mongodump's --nsInclude/--nsExclude: ``*`` matches within and across the db.coll name."""
    include = tuple(include)
    if include and not matches_any(name, include):
        return False
    return not matches_any(name, exclude)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("*")]
    return re.compile("(.*?)".join(parts[:-1]) + ("(.*)" if len(parts) > 1 else "") + parts[-1] + r"\Z")


class Renamer:
    """--nsFrom/--nsTo pairs: each ``*`` in nsFrom captures text that the same-numbered ``*`` in nsTo
    receives, as mongorestore does (``maekcord.*`` -> ``restored.*``). The first matching pair wins."""

    def __init__(self, ns_from: Iterable[str], ns_to: Iterable[str]):
        ns_from, ns_to = list(ns_from), list(ns_to)
        if len(ns_from) != len(ns_to):
            raise ValueError(
                f"--ns-from and --ns-to come in pairs: got {len(ns_from)} --ns-from, {len(ns_to)} --ns-to"
            )
        self.pairs: list[tuple[re.Pattern[str], str]] = []
        for source, target in zip(ns_from, ns_to, strict=True):
            if source.count("*") != target.count("*"):
                raise ValueError(
                    f"--ns-from {source!r} and --ns-to {target!r} must have the same number of '*'"
                )
            if "." not in source or "." not in target:
                raise ValueError(
                    f"--ns-from/--ns-to take db.collection patterns, got {source!r} -> {target!r}"
                )
            self.pairs.append((_wildcard_regex(source), target))

    def __call__(self, ns: str) -> str:
        for regex, target in self.pairs:
            if match := regex.match(ns):
                first, *rest = target.split("*")
                return first + "".join(c + piece for c, piece in zip(match.groups(), rest, strict=True))
        return ns


def check_target_name(ns: str) -> str | None:
    """Why MongoDB would refuse ``ns`` as a namespace, or None."""
    db, _, coll = ns.partition(".")
    if not db or not coll:
        return "a namespace is db.collection with both parts non-empty"
    if len(db.encode()) > MAX_DATABASE_NAME_BYTES:
        return f"database name {db!r} is longer than {MAX_DATABASE_NAME_BYTES} bytes"
    bad = set(db) & set('/\\. "$\0')
    if bad:
        return f"database name {db!r} contains {''.join(sorted(bad))!r}"
    if "\0" in coll or coll.startswith("$"):
        return f"collection name {coll!r} is not allowed"
    return None
