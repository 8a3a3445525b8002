"""What ``oplog find`` reads past the archive: the server's own oplog after the newest stored entry.

The archiver holds its newest entries in memory until it cuts a slice (``SIDECAR_PITR_SLICE_SECONDS``
apart), so a search of the slices alone is blind to the last minute, where the mistake an operator is
looking for usually is. The server's oplog holds those entries too (the archiver reads them from it),
in any process: the CLI, the API, with or without an archiver running. Read with a plain query in
``ts`` order from just after the archive's end (the whole oplog when nothing is stored), the proofs'
scratch databases left out as the archive leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo.errors import PyMongoError

from sidecar.config import Settings
from sidecar.engine.client import ConnectFailed, connected
from sidecar.engine.scratch_names import is_scratch_entry
from sidecar.logs import Redactor
from sidecar.pitr.capture.tailer import is_replica_set_member, oplog
from sidecar.pitr.find.ops import position

SOURCE = "serverOplog"


@dataclass
class ServerOplog:
    """The part of a search read from the server: after which stored entry, how much, and why not."""

    after: Timestamp | None  # the archive's newest entry (None: nothing stored)
    searched: bool = False
    entries: int = 0
    matches: int = 0
    skipped: str | None = None  # why it was not read (the listing is full, all of it is past until)
    error: str | None = None  # it could not be read: the listing holds the archive's part only

    def as_json(self) -> dict[str, Any]:
        return {
            "after": position(self.after) if self.after is not None else None,
            "searched": self.searched,
            "entriesRead": self.entries,
            "matches": self.matches,
            "skipped": self.skipped,
            "error": self.error,
        }


def server_entries(
    settings: Settings, part: ServerOplog, until: Timestamp | None
) -> Iterator[RawBSONDocument]:
    """The server's oplog entries after ``part.after`` (through ``until``), oldest first; a failure
    to reach or read it is recorded in ``part.error`` (passwords redacted) and ends the entries."""
    bounds: dict[str, Timestamp] = {}
    if part.after is not None:
        bounds["$gt"] = part.after
    if until is not None:
        bounds["$lte"] = until
    try:
        with connected(settings.mongodb_uri, settings.connect_timeout_seconds, role="find") as client:
            if not is_replica_set_member(client):
                part.error = "the server is not a replica set member: it has no oplog to search"
                return
            part.searched = True
            cursor = oplog(client).find({"ts": bounds} if bounds else {}, sort=[("$natural", 1)])
            for doc in cursor:
                part.entries += 1
                if not is_scratch_entry(doc):
                    yield doc
    except (ConnectFailed, PyMongoError) as exc:
        part.error = f"the server's oplog could not be read: {Redactor.for_settings(settings)(str(exc))}"
