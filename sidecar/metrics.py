"""Prometheus metrics (names and meanings in docs/metrics.md).

Counters and the duration histogram are updated from job events; everything else is read at scrape
time from cached state (the catalog summary refreshed after each job, the health snapshot, the running
job's progress). A scrape never does I/O, and every series exists from start-up.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    pushadd_to_gateway,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sidecar import __version__, clock
from sidecar.config import Settings
from sidecar.health import HealthMonitor
from sidecar.integrity.failure import LEVELS
from sidecar.integrity.proof_server import SERVER_KINDS
from sidecar.jobs import Job
from sidecar.pitr.capture.state import PitrState
from sidecar.pitr.status import refresh as refresh_pitr
from sidecar.service import BackupService
from sidecar.store.catalog import SAFETY_TRIGGER, STATUS_COMPLETED
from sidecar.store.summary import DESTINATIONS, CatalogSummary, summarize_catalog

PREFIX = "mongobackup"
TRIGGERS = ("schedule", "manual", "cronjob")
STAGES = ("connect", "dump", "write", "verify", "upload")
PROOF_LEVELS = ("drill", "pitr")  # the levels that restore into a server (integrity/proof_server.py)
OFFSITE = ("s3",)
DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
CRONJOB_PUSH_JOB = "mongobackup_cronjob"

# The *_created series double the exposition and no rule or dashboard of ours reads them.
disable_created_metrics()


def _gauge(
    name: str,
    doc: str,
    value: float | None = None,
    labels: dict[str, str] | None = None,
    rows: list[tuple[dict[str, str], float]] | None = None,
) -> GaugeMetricFamily:
    label_names = list((labels or (rows[0][0] if rows else {})).keys())
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=label_names)
    for row_labels, row_value in rows if rows is not None else [(labels or {}, value)]:
        family.add_metric([row_labels[n] for n in label_names], row_value)
    return family


def _thresholds(settings: Settings) -> dict[str, float]:
    """The alert thresholds the rules join on (``mongobackup_alert_threshold_<name>``)."""
    return {
        "backup_age_seconds": settings.alert_backup_max_age_seconds,
        "verify_age_seconds": settings.alert_verify_max_age_seconds,
        "drill_age_seconds": settings.alert_drill_max_age_seconds,
        "pitr_verify_age_seconds": settings.alert_pitr_verify_max_age_seconds,
        "size_drop_ratio": settings.alert_size_drop_ratio,
        "disk_free_ratio": settings.alert_disk_free_min_ratio,
        "pitr_rpo_seconds": settings.alert_pitr_rpo_seconds,
        "oplog_window_seconds": settings.oplog_window_min_seconds,
    }


# What the archiver alone exports: a backup threshold there would let the backup rules (which join
# on instance and job) match a target that takes no backups.
ARCHIVER_THRESHOLDS = ("pitr_rpo_seconds", "oplog_window_seconds")


class _ConfigCollector(Collector):
    """Build info (the dashboards list instances by it) and the alert thresholds named in ``names``."""

    def __init__(self, settings: Settings, names: tuple[str, ...] | None = None):
        values = _thresholds(settings)
        self.thresholds = {n: values[n] for n in (names or values)}

    def collect(self) -> Iterator[Metric]:
        yield _gauge(
            "build_info",
            "Build of the running sidecar.",
            1,
            {"version": __version__, "python_version": platform.python_version()},
        )
        for name, value in self.thresholds.items():
            yield _gauge(
                f"alert_threshold_{name}", "Alert threshold from the sidecar's configuration.", value
            )


def _restore_gauges(restore: Job | None) -> Iterator[Metric]:
    """The running restore's pass (its writes of the archive's documents, then the oplog replay)."""
    p = restore.progress if restore is not None else None
    yield _gauge("restore_in_progress", "1 while a restore runs.", float(p is not None))
    yield _gauge(
        "restore_progress_ratio",
        "Done of planned in the running restore's pass: documents written, then oplog entries replayed.",
        (p.ratio or 0.0) if p is not None else 0.0,
    )
    yield _gauge(
        "restore_eta_seconds",
        "Seconds left in the running restore's pass at its rate so far (0 = none or not known yet).",
        (p.eta or 0.0) if p is not None else 0.0,
    )
    yield _gauge(
        "restore_replay_position_timestamp_seconds",
        "Time of the newest oplog entry the running restore's replay applied (0 = none).",
        float(p.position.time) if p is not None and p.position is not None else 0.0,
    )


class _StateCollector(Collector):
    """Yields the gauges from cached state at scrape time."""

    def __init__(self, owner: SidecarMetrics):
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        o, s, h = self.owner, self.owner.catalog_summary, self.owner.health.snapshot
        yield _gauge(
            "backup_last_success_timestamp_seconds", "End of the newest successful backup.", s.last_success_ts
        )
        yield _gauge(
            "backup_last_attempt_timestamp_seconds", "End of the newest backup attempt.", s.last_attempt_ts
        )
        yield _gauge("backup_last_success", "1 if the newest backup attempt succeeded.", s.last_success)
        yield _gauge("backup_last_size_bytes", "Size of the newest successful backup.", s.last_size)
        yield _gauge(
            "backup_size_baseline_bytes",
            "Median size of the successful backups before the newest.",
            s.size_baseline,
        )
        yield _gauge(
            "backup_last_duration_seconds", "Duration of the newest successful backup.", s.last_duration
        )
        running = o.service.current
        backing_up = running is not None and running.kind == "backup"
        yield _gauge("backup_in_progress", "1 while a backup runs.", float(backing_up))
        yield _gauge(
            "backup_in_progress_bytes",
            "Uncompressed bytes dumped by the running backup.",
            float(running.progress.bytes) if backing_up else 0.0,
        )
        yield from _restore_gauges(running if running is not None and running.kind == "restore" else None)
        for name, key, doc in (
            ("archives", "count", "Archives held per destination."),
            ("archives_size_bytes", "bytes", "Bytes held per destination."),
            ("archive_oldest_timestamp_seconds", "oldest", "Oldest good archive."),
            ("archive_newest_timestamp_seconds", "newest", "Newest good archive."),
        ):
            yield _gauge(name, doc, rows=[({"destination": d}, v[key]) for d, v in s.archives.items()])
        for name, key, doc in (
            ("verify_last_run_timestamp_seconds", "last_run", "Newest integrity test."),
            ("verify_last_success_timestamp_seconds", "last_success_ts", "Newest passing test."),
            ("verify_last_success", "last_success", "1 if the newest test passed."),
        ):
            yield _gauge(name, doc, rows=[({"level": lvl}, v[key]) for lvl, v in s.verify.items()])
        proofs = {lvl: s.proofs.get(lvl, {}) for lvl in PROOF_LEVELS}
        yield _gauge(
            "verify_last_server",
            "1 for the server the newest restore proof of the level ran on (scratch, embedded, source).",
            rows=[
                ({"level": lvl, "server": kind}, float(p.get("server") == kind))
                for lvl, p in proofs.items()
                for kind in SERVER_KINDS
            ],
        )
        yield _gauge(
            "verify_last_written_bytes",
            "Bytes the newest restore proof of the level wrote into its server (0 = none yet).",
            rows=[({"level": lvl}, float(p.get("writtenBytes", 0.0))) for lvl, p in proofs.items()],
        )
        yield _gauge("next_backup_timestamp_seconds", "Next scheduled backup (0 = none).", o.next_backup_ts)
        yield _gauge("disk_total_bytes", "Size of the backup file system.", h.disk_total_bytes)
        yield _gauge("disk_free_bytes", "Free bytes on the backup file system.", h.disk_free_bytes)
        yield _gauge("disk_free_inodes", "Free inodes on the backup file system.", h.disk_free_inodes)
        yield _gauge("mongodb_up", "1 if the last MongoDB ping succeeded.", float(h.mongodb_up))
        yield _gauge(
            "mongodb_ping_latency_seconds", "Round trip of the last successful ping.", h.ping_seconds or 0.0
        )
        yield _gauge("mongodb_info", "MongoDB server version.", 1, {"version": h.server_version or "unknown"})
        yield _gauge(
            "mongodb_replset_member_state",
            "Replica-set state of the member (-1 standalone).",
            float(h.replset_state if h.replset_state is not None else -1),
        )
        yield _gauge("mongodb_replication_lag_seconds", "Lag behind the primary.", h.replication_lag_seconds)
        uploads = dict(s.uploads)
        for dest, ts in o.upload_success_ts.items():
            uploads[dest] = max(ts, uploads.get(dest, 0.0))
        if uploads:
            yield _gauge(
                "upload_last_success_timestamp_seconds",
                "Newest successful off-site upload (0 = none yet).",
                rows=[({"destination": d}, ts) for d, ts in sorted(uploads.items())],
            )


class _PitrCollector(Collector):
    """The oplog archive's series from its cached state (registered unless SIDECAR_PITR=off)."""

    def __init__(self, state: PitrState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        st = self.state
        if st.enabled is False:  # SIDECAR_PITR=auto on a standalone server: no archive to describe
            return
        with st.lock:
            slices, gaps, window_start = dict(st.slices), st.gaps, st.window_start
            last, caught_up, server = st.last_timestamp, st.caught_up_timestamp, st.server_window
            left_out = st.left_out
        if not st.standing_by:  # the archiver at work exports them; these would stand still
            yield _gauge("pitr_last_timestamp_seconds", "Newest oplog entry safely stored.", last)
            yield _gauge(
                "pitr_caught_up_timestamp_seconds",
                "Every oplog entry written before it is stored (time() - it = the RPO now, idle or busy).",
                caught_up,
            )
        yield _gauge(
            "pitr_window_start_timestamp_seconds",
            "Start of the restorable window that reaches the newest stored entry (0 = none).",
            window_start,
        )
        yield _gauge("pitr_gaps", "Gaps in the oplog archive (missing entries between stored ones).", gaps)
        family = CounterMetricFamily(
            f"{PREFIX}_pitr_slices", "Oplog slices written, by result.", labels=["result"]
        )
        for result in ("ok", "failed"):
            family.add_metric([result], slices.get(result, 0))
        yield family
        yield CounterMetricFamily(
            f"{PREFIX}_pitr_scratch_entries_left_out",
            "Oplog entries of the restore proofs' scratch databases the archiver did not store.",
            value=left_out,
        )
        yield _gauge(
            "oplog_window_seconds",
            "The server's own oplog, first to last entry (0 = unknown).",
            server.seconds,
        )


class SidecarMetrics:
    """The sidecar's registry; a JobListener, so every job path (API, scheduler, CLI) updates it."""

    def __init__(
        self,
        settings: Settings,
        service: BackupService,
        health: HealthMonitor,
        registry: CollectorRegistry | None = None,
        pitr: PitrState | None = None,
    ):
        self.settings, self.service, self.health = settings, service, health
        self.pitr = pitr if settings.pitr != "off" else None
        # with off-site copies configured, their series exist from start-up like the local ones
        self.destinations = DESTINATIONS + (OFFSITE if settings.s3_bucket else ())
        self.registry = registry or CollectorRegistry()
        self.catalog_summary = CatalogSummary()
        self.next_backup_ts = 0.0
        self.upload_success_ts: dict[str, float] = {}
        self._lock = threading.Lock()
        self._catalog_version: tuple[int, int] | None = None
        r = self.registry
        self.backup_runs = Counter(
            f"{PREFIX}_backup_runs", "Backup attempts started.", ["trigger"], registry=r
        )
        self.backup_successes = Counter(
            f"{PREFIX}_backup_successes", "Backups completed.", ["trigger"], registry=r
        )
        self.backup_failures = Counter(
            f"{PREFIX}_backup_failures", "Backups failed, by failing stage.", ["trigger", "stage"], registry=r
        )
        self.backup_duration = Histogram(
            f"{PREFIX}_backup_duration_seconds",
            "Duration of successful backups.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.verify_runs = Counter(f"{PREFIX}_verify_runs", "Integrity tests run.", ["level"], registry=r)
        self.verify_failures = Counter(
            f"{PREFIX}_verify_failures", "Integrity tests failed.", ["level"], registry=r
        )
        self.restore_runs = Counter(f"{PREFIX}_restore_runs", "Restores started.", registry=r)
        self.restore_failures = Counter(f"{PREFIX}_restore_failures", "Restores failed.", registry=r)
        self.retention_deleted = Counter(
            f"{PREFIX}_retention_deleted_archives",
            "Archives removed by retention.",
            ["destination"],
            registry=r,
        )
        self.upload_failures = Counter(
            f"{PREFIX}_upload_failures", "Failed off-site uploads.", ["destination"], registry=r
        )
        self.upload_bytes = Counter(
            f"{PREFIX}_upload_bytes", "Bytes uploaded off-site.", ["destination"], registry=r
        )
        self._touch_label_sets()
        r.register(_ConfigCollector(settings))
        r.register(_StateCollector(self))
        if self.pitr is not None:
            r.register(_PitrCollector(self.pitr))
        ProcessCollector(registry=r)  # process_start_time_seconds feeds MongoBackupNoSuccessSinceStart
        service.listeners.append(self)

    def _touch_label_sets(self) -> None:
        """Create every label combination now so alerts never see an absent series."""
        for trigger in TRIGGERS:
            self.backup_runs.labels(trigger)
            self.backup_successes.labels(trigger)
            for stage in STAGES:
                self.backup_failures.labels(trigger, stage)
        for level in LEVELS:
            self.verify_runs.labels(level)
            self.verify_failures.labels(level)
        for dest in self.destinations:
            self.retention_deleted.labels(dest)
            if dest != "local":
                self.upload_failures.labels(dest)
                self.upload_bytes.labels(dest)

    # -- JobListener ------------------------------------------------------------------------------

    def job_started(self, job: Job) -> None:
        if self._is_backup_run(job):
            self.backup_runs.labels(self._trigger(job)).inc()
        elif job.kind == "verify":
            self.verify_runs.labels(job.params.get("level", "full")).inc()
        elif job.kind == "restore":
            self.restore_runs.inc()

    def job_finished(self, job: Job) -> None:
        ok = job.state == "succeeded"
        result = job.result or {}
        if self._is_backup_run(job):
            trigger = self._trigger(job)
            if ok:
                self.backup_successes.labels(trigger).inc()
                self.backup_duration.observe(float(result.get("durationSeconds", 0.0)))
            else:
                stage = job.stage if job.stage in STAGES else "dump"
                self.backup_failures.labels(trigger, stage).inc()
        if job.kind == "backup":  # a safety copy's uploads count too
            self._record_uploads(result.get("uploads") or {})
        if job.kind == "verify" and not ok:
            self.verify_failures.labels(job.params.get("level", "full")).inc()
        elif job.kind == "restore" and not ok:
            self.restore_failures.inc()
        if not result.get("dryRun"):
            self._record_removals(result.get("removed") or [])
        self.refresh_catalog()

    @staticmethod
    def _is_backup_run(job: Job) -> bool:
        """A backup, not the safety copy a restore takes of what it overwrites (part of the restore)."""
        return job.kind == "backup" and job.trigger != SAFETY_TRIGGER

    @staticmethod
    def _trigger(job: Job) -> str:
        return job.trigger if job.trigger in TRIGGERS else "manual"

    def _record_uploads(self, uploads: dict[str, Any]) -> None:
        for dest, outcome in uploads.items():
            # bytes counts only uploads that completed and were checked, even in a partly failed run
            self.upload_bytes.labels(dest).inc(outcome.get("bytes", 0))
            if outcome.get("ok"):
                self.upload_success_ts[dest] = float(outcome.get("at", clock.timestamp()))
            else:
                self.upload_failures.labels(dest).inc()

    def _record_removals(self, removed: list[dict[str, Any]]) -> None:
        """Archives deleted by retention, per destination; dropped failed entries are not archives."""
        for removal in removed:
            if removal.get("status") == STATUS_COMPLETED:
                self.retention_deleted.labels(removal.get("destination", "local")).inc()

    # -- cached state -----------------------------------------------------------------------------

    def refresh_catalog(self) -> None:
        """Blocking (reads backup-info.json): call from a worker thread, never from a scrape."""
        summary = summarize_catalog(self.service.catalog.load(), self.destinations)
        with self._lock:
            self.catalog_summary = summary
        if self.pitr is not None:  # a new base backup may open a window
            refresh_pitr(self.settings, self.pitr)

    def refresh_catalog_if_changed(self) -> bool:
        """Re-read the catalog when another process (a CronJob sharing the directory) changed it."""
        try:
            stat = self.service.catalog.path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            version = None
        if version == self._catalog_version:
            return False
        self.refresh_catalog()
        self._catalog_version = version
        return True

    def set_next_backup(self, epoch_seconds: float | None) -> None:
        self.next_backup_ts = float(epoch_seconds or 0.0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def summary(self) -> dict[str, Any]:
        """The JSON view of the same facts, for GET /api/v1/monitoring/metrics."""
        s, h, now = self.catalog_summary, self.health.snapshot, clock.timestamp()
        return {
            "backup": {
                "lastSuccessAt": s.last_success_ts or None,
                "ageSeconds": round(now - s.last_success_ts, 1) if s.last_success_ts else None,
                "lastAttemptSucceeded": bool(s.last_success),
                "lastSizeBytes": s.last_size,
                "sizeBaselineBytes": s.size_baseline,
                "lastDurationSeconds": s.last_duration,
                "nextScheduledAt": self.next_backup_ts or None,
                "runs": _by_label(self.backup_runs),
                "successes": _by_label(self.backup_successes),
                "failures": _by_label(self.backup_failures),
            },
            "archives": s.archives,
            "verify": s.verify,
            "proofs": s.proofs,
            "disk": {
                "totalBytes": h.disk_total_bytes,
                "freeBytes": h.disk_free_bytes,
                "freeInodes": h.disk_free_inodes,
            },
            "mongodb": {
                "up": h.mongodb_up,
                "pingSeconds": h.ping_seconds,
                "version": h.server_version,
                "replsetState": h.replset_state,
                "replicationLagSeconds": h.replication_lag_seconds,
            },
        }

    def push(self, gateway: str, job: str = CRONJOB_PUSH_JOB, timeout: float = 10.0) -> None:
        """CronJob mode: push-add, so a failed run replaces only what it measured."""
        pushadd_to_gateway(gateway, job=job, registry=self.registry, timeout=timeout)


def archiver_registry(settings: Settings, state: PitrState) -> CollectorRegistry:
    """What ``sidecar pitr stream --metrics-port`` serves: the oplog archive's series, the thresholds
    their rules join on, build info and the process's own series."""
    registry = CollectorRegistry()
    registry.register(_ConfigCollector(settings, ARCHIVER_THRESHOLDS))
    registry.register(_PitrCollector(state))
    ProcessCollector(registry=registry)
    return registry


def _by_label(counter: Counter) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                out["/".join(sample.labels.values())] = sample.value
    return out
