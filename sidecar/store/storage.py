"""Where a copy lives, behind one interface (as Percona Backup for MongoDB's ``storage.Storage``, which
its filesystem and S3 backends implement): ``LocalStorage`` (a directory) and ``S3Backend`` (a bucket
and prefix, ``s3.py``). The archives' copies (``offsite.py``) and the oplog slices' copies
(``pitr/record/offsite.py``) are removed through ``remove_copies``, which picks a copy's place by its
destination name and never branches on where it lives. (Which copy a read takes is
``source.source_for``'s one decision.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sidecar.store.objects import LOCAL, S3, StoreError
from sidecar.store.retention import Removal

STOP_KINDS = ("unreachable", "credentials", "bucket")  # a place that fails so is not tried again now


class Storage(Protocol):
    """A place named ``name`` (local, s3) that holds copies by file name."""

    name: str

    def delete(self, name: str) -> None: ...


class LocalStorage:
    """The files of one directory."""

    name = LOCAL

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def delete(self, name: str) -> None:
        """Remove the file; one already gone is no error."""
        (self.directory / name).unlink(missing_ok=True)


def places(directory: Path, bucket: Callable[[], Storage] | None) -> dict[str, Storage]:
    """Destination name -> its storage: the local directory, and the bucket when one is configured."""
    found: dict[str, Storage] = {LOCAL: LocalStorage(directory)}
    if bucket is not None:
        found[S3] = bucket()
    return found


def remove_copies(
    removals: list[Removal], where: dict[str, Storage], log: logging.Logger, what: str = ""
) -> list[Removal]:
    """Delete each planned copy from its place: the removals done. A copy whose place is not
    configured now, or failed (logged; a place out of reach is not tried again), stays."""
    done: list[Removal] = []
    down: set[str] = set()
    for removal in removals:
        place = where.get(removal.destination)
        if place is None or removal.destination in down:
            continue
        try:
            place.delete(removal.file_name)
        except (StoreError, OSError) as exc:
            log.warning(
                "retention could not remove %s%s from %s: %s",
                what,
                removal.file_name,
                removal.destination,
                exc,
            )
            if isinstance(exc, StoreError) and exc.kind in STOP_KINDS:
                down.add(removal.destination)
            continue
        done.append(removal)
    return done
