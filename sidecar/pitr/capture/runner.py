"""Runs the archiver in a thread: inside ``sidecar serve`` (started and stopped with the Sidecar) and as
``sidecar pitr stream``. A failure (the server gone, a full disk) is logged and the archiver starts
again after ``RESTART_SECONDS`` from the newest stored entry, so nothing is lost while the oplog still
holds it. While another archiver holds the directory this one stands by. With SIDECAR_PITR=auto and a
standalone server, ``serve`` asks again every ``STANDALONE_RECHECK_SECONDS`` (a replica set initiated
after the sidecar started gets its archive without a restart). ``stop()`` lets the archiver store what
it holds and waits for it.
"""

from __future__ import annotations

import logging
import threading
import time

import pymongo
from pymongo.errors import PyMongoError

from sidecar.config import Settings
from sidecar.engine.client import mongo_client
from sidecar.pitr.capture.archiver import OplogArchiver
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.capture.tailer import PitrError, pitr_enabled
from sidecar.pitr.record.catalog import ArchiverBusy
from sidecar.pitr.record.offsite import SliceUploader
from sidecar.pitr.status import refresh

log = logging.getLogger("sidecar.pitr")

RESTART_SECONDS = 5
STANDBY_SECONDS = 30.0  # how often an archiver that found another one at work tries again
STANDALONE_RECHECK_SECONDS = 60.0


class PitrRunner:
    def __init__(
        self, settings: Settings, state: PitrState | None = None, standalone_recheck: float | None = None
    ):
        """``standalone_recheck``: seconds between asking a standalone server again whether it is a
        replica set member now (SIDECAR_PITR=auto); None ends the runner at the first answer."""
        self.settings = settings
        self.standalone_recheck = standalone_recheck
        self.state = state or PitrState()
        self.stopping = threading.Event()
        self.fatal: str | None = None  # why the archiver will not run (SIDECAR_PITR=on, no oplog)
        self._thread: threading.Thread | None = None
        self.uploader = SliceUploader(settings) if settings.s3_bucket else None  # slices to the bucket

    def start(self) -> None:
        if self.settings.pitr == "off" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pitr-archiver", daemon=True)
        self._thread.start()
        if self.uploader is not None:
            self.uploader.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop and wait (``timeout`` seconds at most, for the last slice and its upload); True when the
        archiver has finished."""
        self.stopping.set()
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        self._thread.join(timeout)
        if self.uploader is not None:
            self.uploader.stop(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the archiver thread has ended (stopped, or refused to run)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                with self._client() as client:
                    if not self._resolve(client):
                        if self.standalone_recheck is None:
                            return
                        self.stopping.wait(self.standalone_recheck)
                        continue
                    OplogArchiver(self.settings, client, self.state, self._refresh).run(self.stopping)
                    self._refresh()
            except PitrError as exc:
                self._refuse(str(exc))
                return
            except ArchiverBusy as exc:  # stand by: take over when the other archiver stops
                if self.state.error != str(exc):
                    log.warning("%s; standing by", exc)
                self.state.error, self.state.standing_by = str(exc), True
                self.stopping.wait(STANDBY_SECONDS)
                continue
            except Exception as exc:  # logged, then the archiver starts again from the newest slice
                self.state.error = f"{type(exc).__name__}: {exc}"
                # the server out of reach or refusing us is the health probe's to report as an error
                level = logging.WARNING if isinstance(exc, PyMongoError) else logging.ERROR
                log.log(
                    level, "oplog archiver stopped (%s); restarting in %ds", self.state.error, RESTART_SECONDS
                )
            self.stopping.wait(RESTART_SECONDS)

    def _client(self) -> pymongo.MongoClient:
        return mongo_client(self.settings.mongodb_uri, self.settings.connect_timeout_seconds, "pitr")

    def _resolve(self, client: pymongo.MongoClient) -> bool:
        enabled = pitr_enabled(self.settings, client)
        if enabled != self.state.enabled:
            if enabled is False:
                log.info("SIDECAR_PITR=auto and the server is standalone (no oplog): no oplog archive")
            elif self.state.enabled is False:
                log.info("the server is a replica set member now: the oplog archive starts")
        self.state.enabled = enabled
        return enabled

    def _refuse(self, reason: str) -> None:
        self.fatal = self.state.error = reason
        log.error("oplog archiver not running: %s", reason)

    def _refresh(self) -> None:
        if self.uploader is not None:
            self.uploader.notify()
        try:
            refresh(self.settings, self.state)
        except Exception as exc:  # the gauges keep their last values; the next slice tries again
            log.error("cannot refresh the oplog archive summary: %s: %s", type(exc).__name__, exc)
