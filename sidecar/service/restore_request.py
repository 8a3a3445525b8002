"""What a restore is asked to do, declared once for the command line, the API and the service: one
spelling of each parameter (the fields, mongorestore's options and the restore's own), one record of
them in the job (``as_json``, by the API's field names), whichever way the request came in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from sidecar.config import Settings
from sidecar.engine.restore_plan import OPTION_KEYS, RestoreOptions
from sidecar.pitr.planning.restore_point import PointTarget

ENGINES = ("native", "mongorestore")
REQUEST_KEYS = {**OPTION_KEYS, "safety_backup": "safetyBackup", "engine": "engine"}  # field -> JSON name


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class RestoreRequest(RestoreOptions):
    """An archive (``file_name``, or ``latest``) or a point in time (``point``), and the options."""

    file_name: str | None = None
    latest: bool = False
    point: PointTarget | None = None
    safety_backup: bool = True
    engine: str | None = None  # None: mongorestore when SIDECAR_ENGINE=mongodump, else native

    def __post_init__(self) -> None:
        for name in ("ns_include", "ns_exclude", "ns_from", "ns_to"):  # one pattern, a list or None
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))

    @classmethod
    def from_json(cls, body: dict[str, Any], **given: Any) -> RestoreRequest:
        """From the fields of a request body named as ``as_json`` names them, and ``given``."""
        return cls(**{name: body[key] for name, key in REQUEST_KEYS.items() if key in body}, **given)

    def for_settings(self, settings: Settings) -> RestoreRequest:
        """The request with its engine decided (ValueError for an unknown one)."""
        engine = self.engine or ("mongorestore" if settings.engine == "mongodump" else "native")
        if engine not in ENGINES:
            raise ValueError(f"engine must be native or mongorestore, got {engine!r}")
        return replace(self, engine=engine)

    @property
    def options(self) -> RestoreOptions:
        """mongorestore's options alone, as the planner and the engines take them."""
        return RestoreOptions(**{f.name: getattr(self, f.name) for f in fields(RestoreOptions)})

    def as_json(self) -> dict[str, Any]:
        """The job's recorded parameters: the same keys from the command line and from the API."""
        target = (
            {"pointInTime": self.point.as_json()}
            if self.point is not None
            else {"fileName": self.file_name or "--latest"}
        )
        return {**target, **{key: _plain(getattr(self, name)) for name, key in REQUEST_KEYS.items()}}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
