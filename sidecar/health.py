"""Probes of MongoDB and the backup disk, cached so that /health and /metrics never do I/O.

A probe's MongoDB commands share one time budget (``probe_timeout``): the connect timeout, but below
the probe interval, so that a server that does not answer (or refuses the password, which pymongo
retries until its server selection times out) never makes probes overlap.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

import pymongo
from pymongo.common import MIN_HEARTBEAT_INTERVAL
from pymongo.errors import OperationFailure, PyMongoError

from sidecar import clock
from sidecar.config import Settings, uri_hosts
from sidecar.engine.client import mongo_client

log = logging.getLogger("sidecar.health")
STANDALONE_STATE = -1
PROBE_SHARE_OF_INTERVAL = 0.8


def probe_timeout(settings: Settings) -> float:
    """Seconds a probe may spend on MongoDB: the connect timeout, capped at 80% of the probe interval.

    pymongo's server selection looks again every ``MIN_HEARTBEAT_INTERVAL`` (0.5 s), so it overruns a
    budget that is not a multiple of that by up to as much: the cap is rounded down to one."""
    cap = settings.health_interval_seconds * PROBE_SHARE_OF_INTERVAL
    if cap > MIN_HEARTBEAT_INTERVAL:
        cap = MIN_HEARTBEAT_INTERVAL * math.floor(cap / MIN_HEARTBEAT_INTERVAL)
    return min(settings.connect_timeout_seconds, cap)


@dataclass(frozen=True)
class HealthSnapshot:
    mongodb_up: bool = False
    ping_seconds: float | None = None
    server_version: str | None = None
    replset_state: int | None = None  # 1 primary, 2 secondary, ...; -1 standalone; None unknown
    replication_lag_seconds: float = 0.0
    error: str | None = None
    disk_total_bytes: int = 0
    disk_free_bytes: int = 0
    disk_free_inodes: int = 0
    checked_at: float = 0.0  # epoch seconds of the probe; 0 = never probed


def _replica_state(client: pymongo.MongoClient) -> tuple[int, float]:
    try:
        status = client.admin.command("replSetGetStatus")
    except OperationFailure as exc:
        if exc.code in (76, 94):  # NoReplicationEnabled, NotYetInitialized
            return STANDALONE_STATE, 0.0
        raise
    me = next((m for m in status.get("members", []) if m.get("self")), {})
    primary = next((m for m in status.get("members", []) if m.get("state") == 1), None)
    lag = 0.0
    if primary and me and me is not primary and me.get("optimeDate") and primary.get("optimeDate"):
        lag = max(0.0, (primary["optimeDate"] - me["optimeDate"]).total_seconds())
    return int(status.get("myState", me.get("state", 0))), lag


class HealthMonitor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.timeout = probe_timeout(settings)
        self.snapshot = HealthSnapshot()  # the newest probe's result; read by /health and /metrics
        self._client: pymongo.MongoClient | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> pymongo.MongoClient:
        if self._client is None:
            self._client = mongo_client(self.settings.mongodb_uri, self.timeout, "health")
        return self._client

    def probe(self) -> HealthSnapshot:
        """Blocking: ping MongoDB and stat the disk; the result becomes the cached snapshot."""
        with self._lock:
            values = self._probe_disk()
            values.update(self._probe_mongodb())
            self.snapshot = HealthSnapshot(checked_at=clock.timestamp(), **values)
            return self.snapshot

    def _probe_mongodb(self) -> dict:
        try:
            client = self._get_client()
            with pymongo.timeout(self.timeout):  # one budget for the whole probe
                t0 = time.perf_counter()
                client.admin.command("ping")
                ping = time.perf_counter() - t0
                version = self.snapshot.server_version or client.server_info().get("version")
                state, lag = _replica_state(client)
            return {
                "mongodb_up": True,
                "ping_seconds": ping,
                "server_version": version,
                "replset_state": state,
                "replication_lag_seconds": lag,
            }
        except PyMongoError as exc:
            error = f"MongoDB at {uri_hosts(self.settings.mongodb_uri)} unreachable: {self._reason(exc)}"
            self.close()  # the next probe starts afresh: a refused login fails at once, not after the budget
            if self.snapshot.mongodb_up:
                log.warning(error)
            return {"mongodb_up": False, "error": error, "server_version": self.snapshot.server_version}

    def _reason(self, exc: PyMongoError) -> str:
        if (isinstance(exc, OperationFailure) and exc.code == 18) or "Authentication failed" in str(exc):
            return "authentication failed"
        if "Timeout" in type(exc).__name__:
            return f"no answer within {self.timeout:g}s"
        return type(exc).__name__

    def _probe_disk(self) -> dict:
        try:
            stat = os.statvfs(self.settings.backup_dir)
        except OSError as exc:
            return {"error": f"backup directory {self.settings.backup_dir}: {exc.strerror}"}
        return {
            "disk_total_bytes": stat.f_blocks * stat.f_frsize,
            "disk_free_bytes": stat.f_bavail * stat.f_frsize,
            "disk_free_inodes": stat.f_favail,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
