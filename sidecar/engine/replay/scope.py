"""Which namespaces a replay writes, under which names: the restore's rules, applied to oplog entries.

The same rules as for the base data (``restore_plan.plan_restore``): the ``local`` and ``config``
databases and system collections (but ``system.js``) are never restored, ``--nsInclude`` and
``--nsExclude`` choose by source namespace, and ``--nsFrom``/``--nsTo`` rename what is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.engine.namespaces import Renamer, is_internal, namespace_matches
from sidecar.engine.restore_plan import RestoreOptions


@dataclass(frozen=True)
class ReplayScope:
    """``target(ns)``: the name a source namespace is replayed under, or None when it is not replayed."""

    rename: Callable[[str], str] | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, options: RestoreOptions) -> ReplayScope:
        """The scope of a restore with these options (the same namespaces, the same renaming)."""
        renamer = Renamer(options.ns_from, options.ns_to) if options.ns_from else None
        return cls(renamer, tuple(options.ns_include), tuple(options.ns_exclude))

    @property
    def is_plain(self) -> bool:
        """Every namespace under its own name."""
        return self.rename is None and not self.include and not self.exclude

    def target(self, ns: str) -> str | None:
        if is_internal(ns) or not namespace_matches(ns, self.include, self.exclude):
            return None
        return self.rename(ns) if self.rename is not None else ns
