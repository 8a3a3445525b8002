"""A backup's request that the archiver store a slice through a position now, not when it is due.

A backup that takes its oplog cut from the archive writes the position it needs (its ``end``) to
``oplog/.cut-request``; the archiver, in this process or another, looks at that file at most every
``CHECK_SECONDS`` and cuts as soon as its buffer holds that position (and the timestamp group there is
complete). So the backup waits about a second, not ``SIDECAR_PITR_SLICE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from bson.timestamp import Timestamp

from sidecar.pitr import optime

REQUEST_NAME = ".cut-request"
CHECK_SECONDS = 0.25


@contextlib.contextmanager
def requested_cut(directory: Path, position: Timestamp) -> Iterator[None]:
    """The request stands while the block runs (written atomically, removed after)."""
    path = Path(directory) / REQUEST_NAME
    partial = path.with_name(f"{REQUEST_NAME}.{os.getpid()}")
    partial.write_text(json.dumps(optime.as_json(position)))
    partial.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


class CutRequests:
    """The archiver's side: the requested position, read from the file at most every CHECK_SECONDS."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / REQUEST_NAME
        self._checked = 0.0
        self._position: Timestamp | None = None

    def position(self) -> Timestamp | None:
        now = time.monotonic()
        if now - self._checked >= CHECK_SECONDS:
            self._checked = now
            self._position = self._read()
        return self._position

    def _read(self) -> Timestamp | None:
        try:
            return optime.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):  # none, or a half-gone file: no request
            return None
