"""The archiver: takes entries from the tail and cuts them into slices.

The first start (no slice yet) begins after the consistent point of the newest base backup when the
server's oplog still holds it, so that backup opens a window at once; otherwise after the newest entry.
A slice is cut when the next entry has another timestamp than the newest buffered one and the buffer
is ``SIDECAR_PITR_SLICE_SECONDS`` old or would pass ``SIDECAR_PITR_SLICE_MAX_BYTES``; or when the tail
is idle (every visible entry given out, so the newest timestamp group is complete) and either limit is
reached; or when a backup waits for an entry the buffer holds (``pitr/cutrequest.py``); or at stop.
At a stop in the middle of a stream the newest timestamp group may be incomplete: it is left for the
next start, which reads it again (resume is "after the newest stored entry").

Entries of the restore proofs' scratch databases (a proof the operator ran on this server) are left
out and counted (each slice's ``leftOut``): the archive records the application, never a proof.

Before a slice is stored, the server is asked how many entries its range holds; when the cursor
passed over some (the embedded server's tailable cursor does, under concurrent writes, where one
server batch ends and the next begins), the range is read again with a plain query, which does not.
One count per slice: on that server every oplog query scans the whole oplog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pymongo
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.config import Settings
from sidecar.engine.scratch_names import is_scratch_entry
from sidecar.logs import Redactor
from sidecar.pitr import optime
from sidecar.pitr.capture.cut_request import CutRequests
from sidecar.pitr.capture.presence import PRESENCE_SECONDS, write_presence
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.capture.tailer import OplogTail, OplogWindow, Rollover, oldest_entry, oplog, oplog_window
from sidecar.pitr.planning.bases import base_backups
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.pitr.record.chain import ROLLOVER
from sidecar.pitr.record.slices import SliceBuffer, oplog_dir, write_slice
from sidecar.store.catalog import PARTIAL_SUFFIX
from sidecar.text import iso_utc

log = logging.getLogger("sidecar.pitr")

WINDOW_PROBE_SECONDS = 60.0  # how often, while idle, the server's window and the chain are read again


class OplogArchiver:
    """``run(stop)`` archives until ``stop`` is set, then stores what it holds and returns."""

    def __init__(
        self,
        settings: Settings,
        client: pymongo.MongoClient,
        state: PitrState | None = None,
        on_change: Callable[[], None] | None = None,
    ):
        self.settings, self.client = settings, client
        self.catalog = SliceCatalog(oplog_dir(settings))
        self.state = state or PitrState(enabled=True)
        self.on_change = on_change or (lambda: None)  # a slice or a gap: refresh the metrics' summary
        self.buffer = SliceBuffer(prev=None)
        self._complete = True  # the newest buffered timestamp group is known to be complete
        self._probed = 0.0
        self.requests = CutRequests(self.catalog.directory)  # a backup waiting for its cut
        self._since = 0.0
        self._presence_written = 0.0
        self._redact = Redactor.for_settings(settings)

    def run(self, stop: threading.Event) -> None:
        with self.catalog.archiver_lock():
            self._remove_partials()
            last = self.catalog.last_position()
            self.state.last_position = last
            start = last if last is not None else self._first_start()
            self.buffer = SliceBuffer(prev=start)
            self.state.running, self.state.standing_by, self.state.error = True, False, None
            self._since = clock.timestamp()
            self._write_presence()
            log.info("oplog archiver started after %s", optime.label(start) if start else "nothing")
            error = None
            try:
                for event in OplogTail(self.client, start).events(stop):
                    if event is None:
                        self._idle()
                    elif isinstance(event, Rollover):
                        self._rollover(event)
                    else:
                        self._take(event)
                self._flush()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self.state.running = False
                self._write_presence(error)

    def _write_presence(self, error: str | None = None) -> None:
        """The presence file for ``pitr status`` in other processes; a failed write costs no entry."""
        self._presence_written = time.monotonic()
        try:
            write_presence(
                self.catalog.directory, self.state, self._since, self._redact(error) if error else None
            )
        except OSError as exc:
            log.warning("cannot write the archiver's presence file: %s", exc)

    def _first_start(self) -> Timestamp | None:
        window = self.state.server_window = oplog_window(self.client)
        self._probed = time.monotonic()
        if window.first is None or window.last is None:
            return None
        held = [p for _, p in base_backups(self.settings) if window.first <= p <= window.last]
        return max(held, default=window.last)

    def _take(self, entry: RawBSONDocument) -> None:
        ts = entry["ts"]
        buffer = self.buffer
        if is_scratch_entry(entry):  # a proof's write on this server (opt-in): never archived
            buffer.leave_out(ts)
            with self.state.lock:
                self.state.left_out += 1
            return
        if len(buffer) and ts != buffer.last and self._due(extra=len(entry.raw)):
            self._cut()
        self.buffer.add(entry, ts)
        self._complete = False

    def _idle(self) -> None:
        self._complete = True
        if len(self.buffer) and self._due():
            self._cut()
        self._mark_caught_up()
        if time.monotonic() - self._presence_written > PRESENCE_SECONDS:
            self._write_presence()
        if time.monotonic() - self._probed > WINDOW_PROBE_SECONDS:
            self._probe_window()
            self.on_change()  # and the chain: a slice removed or damaged on an idle server shows too

    def _mark_caught_up(self) -> None:
        """The tail gave out every entry the server holds: all before the open slice's first entry (or,
        with none open, before now) are stored."""
        first = self.buffer.first
        self.state.mark_caught_up(float(first.time) if first is not None else clock.timestamp())

    def _due(self, extra: int = 0) -> bool:
        s = self.settings
        return (
            self.buffer.age() >= s.pitr_slice_seconds
            or self.buffer.raw_bytes + extra > s.pitr_slice_max_bytes
            or self._requested()
        )

    def _requested(self) -> bool:
        """A backup waits for a position this buffer holds (see pitr/cutrequest.py)."""
        wanted = self.requests.position()
        first, last = self.buffer.first, self.buffer.last
        return wanted is not None and first is not None and last is not None and first <= wanted <= last

    def _rollover(self, event: Rollover) -> None:
        """The oplog rolled past the newest stored entry: record the gap, go on from the oldest one."""
        if len(self.buffer):
            self._cut()
        gap = {
            "from": optime.as_json(event.after),
            "to": optime.as_json(event.first),
            "cause": ROLLOVER,
            "detectedAt": iso_utc(clock.now()),
            "detail": f"the server's oplog no longer holds {optime.label(event.after)}; its oldest "
            f"entry is {optime.label(event.first)}: the entries between are lost",
        }
        self.catalog.add_gap(gap)
        with self.state.lock:
            self.state.rollovers += 1
        log.error("oplog archive gap: %s", gap["detail"])
        self.buffer = SliceBuffer(prev=None)  # the next slice does not join the previous one
        self.on_change()

    def _checked(self, buffer: SliceBuffer) -> SliceBuffer:
        """The buffer, or its range read again from the oplog when the cursor passed over entries."""
        assert buffer.first is not None and buffer.last is not None
        low = {"$gt": buffer.prev} if buffer.prev is not None else {"$gte": buffer.first}
        query = {"ts": {**low, "$lte": buffer.last}}
        held = oplog(self.client).count_documents(query)
        if held <= len(buffer) + buffer.left_out:
            return buffer
        log.warning(
            "the oplog cursor passed over %d entries up to %s; reading them again",
            held - len(buffer),
            optime.label(buffer.last),
        )
        fresh = SliceBuffer(buffer.prev)
        for entry in oplog(self.client).find(query):
            if is_scratch_entry(entry):
                fresh.leave_out(entry["ts"])
            else:
                fresh.add(entry, entry["ts"])
        fresh.left_out_after += buffer.left_out_after
        with self.state.lock:  # the proofs' entries the cursor passed over count too
            self.state.left_out += fresh.left_out - buffer.left_out
        return fresh

    def _cut(self) -> None:
        buffer = self._checked(self.buffer)
        try:
            entry = write_slice(self.settings, buffer)
            self.catalog.add_slice(entry)
        except Exception:
            with self.state.lock:
                self.state.slices["failed"] += 1
            raise
        with self.state.lock:
            self.state.slices["ok"] += 1
            self.state.last_position = buffer.last
        log.info("oplog slice %s: %d entries, %d bytes", entry["fileName"], len(buffer), entry["sizeBytes"])
        self.buffer = buffer.next()
        self._write_presence()
        self.on_change()

    def _flush(self) -> None:
        """At stop: store what is held, except a timestamp group that may still be incomplete."""
        if not self._complete:
            self.buffer = self.buffer.without_last_group()
        if len(self.buffer):
            self._cut()

    def _probe_window(self) -> None:
        """The server's window: its oldest entry (a query), its newest (the one the tail just gave out,
        as the tail is idle)."""
        self._probed = time.monotonic()
        try:
            first = oldest_entry(self.client)
        except pymongo.errors.PyMongoError as exc:
            log.warning("cannot read the server's oldest oplog entry: %s", exc)
            return
        newest = self.buffer.last or self.state.last_position
        self.state.server_window = OplogWindow(first, newest or self.state.server_window.last)

    def _remove_partials(self) -> None:
        """Leftovers of a slice write a crash interrupted (the entries are read again)."""
        for path in self.catalog.directory.glob(f".*{PARTIAL_SUFFIX}"):
            path.unlink(missing_ok=True)
