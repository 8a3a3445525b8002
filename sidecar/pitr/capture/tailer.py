"""The oplog side: is there one, what it holds, and one tailable cursor over it that resumes.

``OplogTail.events`` yields the raw entries after a position, in order, ``None`` each time the cursor
waited ``MAX_AWAIT_MS`` without news (the archiver then knows every visible entry was given out), and a
``Rollover`` when the entry to resume after is no longer in the server's oplog. It resumes with
``ts >= after`` and expects the first entry returned to be at ``after`` itself (still in the oplog);
entries at ``after`` that were already given out are skipped (several entries share one ts in a
transaction). A cursor that dies (a lost connection, a truncated position) is reopened the same way.
A tailable cursor may pass over entries (the embedded server's does, under concurrent writes, where
one server batch ends and the next begins): the archiver checks each slice against the oplog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bson
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import CursorType
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from sidecar.config import Settings
from sidecar.pitr import optime

log = logging.getLogger("sidecar.pitr")

MAX_AWAIT_MS = 1000
# Under a steady write load each getMore comes back at once with the one or two entries written since
# the last: hundreds a second, each costing the archiver more CPU than its entries. Once caught up (a
# batch that is not full) it asks at most twenty times a second, for at most 0.05 s more lag; a
# full batch means more is waiting, asked for at once.
FETCH_INTERVAL_SECONDS = 0.05
BATCH_ENTRIES = 1000  # the embedded server's getMore gives 101 entries unless asked for more
RETRY_SECONDS = 2.0
ALL = -1  # every entry at the resume position is already stored


class PitrError(RuntimeError):
    """Point-in-time archiving cannot run (no oplog, a server behind the archive, ...)."""


RAW = CodecOptions(document_class=RawBSONDocument)


def oplog(client: pymongo.MongoClient) -> Collection[RawBSONDocument]:
    return client.local.get_collection("oplog.rs", RAW)


def is_replica_set_member(client: pymongo.MongoClient) -> bool:
    return bool(client.admin.command("hello").get("setName"))


def pitr_enabled(settings: Settings, client: pymongo.MongoClient) -> bool:
    """SIDECAR_PITR: auto = on for a replica set member; on = refuse to run without an oplog."""
    if settings.pitr == "off":
        return False
    member = is_replica_set_member(client)
    if settings.pitr == "on" and not member:
        raise PitrError("SIDECAR_PITR=on needs a replica set member (a standalone server has no oplog)")
    return member


@dataclass(frozen=True)
class OplogWindow:
    """The server's own oplog: its oldest and newest entries (None when unknown or empty)."""

    first: Timestamp | None = None
    last: Timestamp | None = None

    @property
    def seconds(self) -> float:
        return float(self.last.time - self.first.time) if self.first and self.last else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "first": optime.as_json(self.first) if self.first else None,
            "last": optime.as_json(self.last) if self.last else None,
            "firstTime": optime.iso(self.first) if self.first else None,
            "lastTime": optime.iso(self.last) if self.last else None,
            "seconds": self.seconds,
        }


def _end(client: pymongo.MongoClient, direction: int) -> Timestamp | None:
    entry = client.local["oplog.rs"].find_one({}, {"ts": 1}, sort=[("$natural", direction)])
    return entry["ts"] if entry else None


def oldest_entry(client: pymongo.MongoClient) -> Timestamp | None:
    return _end(client, 1)


def oplog_window(client: pymongo.MongoClient) -> OplogWindow:
    return OplogWindow(_end(client, 1), _end(client, -1))


@dataclass(frozen=True)
class Rollover:
    """The oplog no longer holds ``after``: the entries between it and ``first`` are lost."""

    after: Timestamp
    first: Timestamp


def _paced(cursor: pymongo.cursor.RawBatchCursor, stop: threading.Event) -> Iterator[list[RawBSONDocument]]:
    """The cursor's batches of entries (empty when the server waited without news) until the cursor
    dies or ``stop`` is set; after a batch that is not full, the next is asked for no sooner than
    ``FETCH_INTERVAL_SECONDS`` after this one was."""
    while cursor.alive and not stop.is_set():
        asked = time.monotonic()
        batch = next(cursor, None)  # None: an empty batch, or the cursor died
        if batch is None:
            if cursor.alive:
                yield []
            continue
        entries = bson.decode_all(batch, RAW)
        yield entries
        pause = FETCH_INTERVAL_SECONDS - (time.monotonic() - asked) if len(entries) < BATCH_ENTRIES else 0
        if stop.wait(max(0.0, pause)):
            return


class OplogTail:
    """Tails the oplog after ``after`` (None: from its oldest entry), across cursor deaths."""

    def __init__(self, client: pymongo.MongoClient, after: Timestamp | None):
        self.client = client
        self.after = after
        self.given_at_after = ALL  # how many entries at ``after`` were already given out

    def events(self, stop: threading.Event) -> Iterator[RawBSONDocument | Rollover | None]:
        while not stop.is_set():
            try:
                yield from self._cursor(stop)
            except PyMongoError as exc:
                log.warning("oplog cursor lost (%s); resuming after %s", exc, self._where())
            stop.wait(RETRY_SECONDS)

    def _where(self) -> str:
        return optime.label(self.after) if self.after else "the start of the oplog"

    def _open(self) -> pymongo.cursor.RawBatchCursor:
        query = {"ts": {"$gte": self.after}} if self.after is not None else {}
        cursor = oplog(self.client).find_raw_batches(query, cursor_type=CursorType.TAILABLE_AWAIT)
        return cursor.max_await_time_ms(MAX_AWAIT_MS).batch_size(BATCH_ENTRIES)

    def _cursor(self, stop: threading.Event) -> Iterator[RawBSONDocument | Rollover | None]:
        """One cursor, until it dies or ``stop`` is set."""
        resume, skip = self.after, self.given_at_after
        checked = resume is None
        with self._open() as cursor:
            for batch in _paced(cursor, stop):
                if not batch:  # the server waited MAX_AWAIT_MS without news
                    if not checked:  # nothing at or after ``after``: gone, or a server behind the archive
                        self._refuse_if_behind()
                        return
                    yield None
                    continue
                for entry in batch:
                    ts = entry["ts"]
                    if not checked:
                        checked = True
                        if ts != resume:
                            yield Rollover(resume, ts)  # type: ignore[arg-type]
                    if ts == resume and skip != 0:  # given out before this cursor was opened
                        skip = ALL if skip == ALL else skip - 1
                        continue
                    self._given(ts)
                    yield entry
                    if stop.is_set():
                        return

    def _given(self, ts: Timestamp) -> None:
        if ts == self.after and self.given_at_after != ALL:
            self.given_at_after += 1
        elif ts != self.after:
            self.after, self.given_at_after = ts, 1

    def _refuse_if_behind(self) -> None:
        window = oplog_window(self.client)
        assert self.after is not None
        if window.last is None or window.last < self.after:
            newest = optime.label(window.last) if window.last else "nothing"
            raise PitrError(
                f"the server's oplog ends at {newest}, before the archive's newest entry "
                f"{optime.label(self.after)}: is this another or a restored server? Move the oplog "
                f"directory aside to start a new archive"
            )
