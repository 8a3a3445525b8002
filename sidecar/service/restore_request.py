"""What a restore is asked to do, declared once for the command line, the API and the service: one
spelling of each parameter (the fields), one record of them in the job (``as_json``, the API's
field names), whichever way the request came in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from sidecar.config import Settings
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.pitr.planning.restore_point import PointTarget

ENGINES = ("native", "mongorestore")
PATTERN_FIELDS = ("ns_include", "ns_exclude", "ns_from", "ns_to")


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class RestoreRequest:
    """An archive (``file_name``, or ``latest``) or a point in time (``point``), and the options."""

    file_name: str | None = None
    latest: bool = False
    point: PointTarget | None = None
    ns_include: tuple[str, ...] = ()
    ns_exclude: tuple[str, ...] = ()
    ns_from: tuple[str, ...] = ()
    ns_to: tuple[str, ...] = ()
    drop: bool = False
    dry_run: bool = False
    oplog_replay: bool = True
    safety_backup: bool = True
    engine: str | None = None  # None: mongorestore when SIDECAR_ENGINE=mongodump, else native

    def __post_init__(self) -> None:
        for name in PATTERN_FIELDS:  # a single pattern, a list, or None, as callers pass them
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))

    def for_settings(self, settings: Settings) -> RestoreRequest:
        """The request with its engine decided (ValueError for an unknown one)."""
        engine = self.engine or ("mongorestore" if settings.engine == "mongodump" else "native")
        if engine not in ENGINES:
            raise ValueError(f"engine must be native or mongorestore, got {engine!r}")
        return replace(self, engine=engine)

    @property
    def options(self) -> RestoreOptions:
        return RestoreOptions(
            ns_include=self.ns_include,
            ns_exclude=self.ns_exclude,
            ns_from=self.ns_from,
            ns_to=self.ns_to,
            drop=self.drop,
            dry_run=self.dry_run,
            oplog_replay=self.oplog_replay,
        )

    def as_json(self) -> dict[str, Any]:
        """The job's recorded parameters: the same keys from the command line and from the API."""
        target = (
            {"pointInTime": self.point.as_json()}
            if self.point is not None
            else {"fileName": self.file_name or "--latest"}
        )
        return {**target, "engine": self.engine, "safetyBackup": self.safety_backup, **self.options.as_json()}
