"""The local view of the alert conditions that alerts/mongobackup.rules.yml evaluates in Prometheus.

Both read the same thresholds (the SIDECAR_ALERT_* settings; Prometheus gets them through the
``mongobackup_alert_threshold_*`` gauges), so the endpoint and Alertmanager agree.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar import clock
from sidecar.config import Settings
from sidecar.health import HealthMonitor, HealthSnapshot
from sidecar.pitr.capture.state import PitrState
from sidecar.service import BackupService
from sidecar.store.summary import CatalogSummary, summarize_catalog

PROCESS_START = clock.timestamp()


@dataclass(frozen=True)
class Facts:
    settings: Settings
    catalog: CatalogSummary
    health: HealthSnapshot
    now: float
    pitr: PitrState | None = None  # the oplog archive's cached state; None with SIDECAR_PITR=off

    def age(self, ts: float) -> float:
        return self.now - ts

    @property
    def archive(self) -> PitrState | None:
        """The archive's state when there is one to describe (not on a standalone with PITR=auto)."""
        return self.pitr if self.pitr is not None and self.pitr.enabled is not False else None


# A check returns (firing, current value, threshold); value and threshold are shown to operators.
Outcome = tuple[bool, float | None, float | None]
Check = Callable[[Facts], Outcome]
CONDITIONS: list[tuple[str, str, str, Check]] = []  # in the order the endpoint lists them


def condition(name: str, severity: str, summary: str) -> Callable[[Check], Check]:
    """Register a check as the local view of the alert rule ``name``."""

    def register(check: Check) -> Check:
        CONDITIONS.append((name, severity, summary, check))
        return check

    return register


@condition("MongoBackupTooOld", "critical", "The newest successful backup is older than the threshold")
def _backup_too_old(f: Facts) -> Outcome:
    ts, limit = f.catalog.last_success_ts, f.settings.alert_backup_max_age_seconds
    return (ts > 0 and f.age(ts) > limit), (f.age(ts) if ts else None), limit


@condition("MongoBackupNoSuccessSinceStart", "critical", "No successful backup since the sidecar started")
def _never_succeeded(f: Facts) -> Outcome:
    uptime, limit = f.age(PROCESS_START), f.settings.alert_backup_max_age_seconds
    return (f.catalog.last_success_ts == 0 and uptime > limit), uptime, limit


@condition("MongoBackupLastFailed", "critical", "The newest backup attempt failed")
def _last_failed(f: Facts) -> Outcome:
    return f.catalog.last_success == 0, float(f.catalog.last_success), 1.0


@condition("MongoBackupVerifyFailed", "critical", "The newest integrity test failed")
def _verify_failed(f: Facts) -> Outcome:
    failed = [lv for lv in ("quick", "full") if f.catalog.verify.get(lv, {}).get("last_success", 1) == 0]
    return bool(failed), 0.0 if failed else 1.0, 1.0


def _level_failed(level: str, f: Facts) -> Outcome:
    ok = f.catalog.verify.get(level, {}).get("last_success", 1)
    return ok == 0, float(ok), 1.0


def _level_too_old(level: str, limit: float, f: Facts) -> Outcome:
    """Only once a backup exists: a fresh install has nothing to test yet."""
    if not f.catalog.last_success_ts:
        return False, None, limit
    last = f.catalog.verify.get(level, {}).get("last_success_ts", 0.0)
    age = f.age(last or f.catalog.last_success_ts)
    return age > limit, age, limit


@condition("MongoBackupVerifyTooOld", "warning", "No passing full integrity test within the threshold")
def _verify_too_old(f: Facts) -> Outcome:
    return _level_too_old("full", f.settings.alert_verify_max_age_seconds, f)


@condition("MongoBackupDrillFailed", "critical", "The newest restore drill failed")
def _drill_failed(f: Facts) -> Outcome:
    return _level_failed("drill", f)


@condition("MongoBackupDrillTooOld", "warning", "No passing restore drill within the threshold")
def _drill_too_old(f: Facts) -> Outcome:
    return _level_too_old("drill", f.settings.alert_drill_max_age_seconds, f)


@condition(
    "MongoBackupPitrVerifyFailed", "critical", "The oplog archive does not reproduce the newest base backup"
)
def _pitr_verify_failed(f: Facts) -> Outcome:
    return _level_failed("pitr", f)


@condition("MongoBackupSizeDropped", "warning", "The newest backup is much smaller than the ones before")
def _size_dropped(f: Facts) -> Outcome:
    base, ratio = f.catalog.size_baseline, f.settings.alert_size_drop_ratio
    if base <= 0:
        return False, None, ratio
    return f.catalog.last_size < ratio * base, f.catalog.last_size / base, ratio


@condition("MongoBackupDiskLow", "warning", "Free space on the backup disk is below the threshold")
def _disk_low(f: Facts) -> Outcome:
    total, ratio = f.health.disk_total_bytes, f.settings.alert_disk_free_min_ratio
    if total <= 0:
        return False, None, ratio
    free_ratio = f.health.disk_free_bytes / total
    return free_ratio < ratio, free_ratio, ratio


@condition("MongoBackupDiskNoRoomForNext", "critical", "The backup disk cannot hold another backup")
def _disk_will_not_fit(f: Facts) -> Outcome:
    free, need = float(f.health.disk_free_bytes), f.catalog.last_size
    return (f.health.checked_at > 0 and free < need), free, need


@condition("MongoBackupMongoDBDown", "critical", "MongoDB does not answer the sidecar's ping")
def _mongodb_down(f: Facts) -> Outcome:
    return (f.health.checked_at > 0 and not f.health.mongodb_up), float(f.health.mongodb_up), 1.0


@condition(
    "MongoBackupPitrRpoBreached",
    "critical",
    "Oplog entries older than the RPO limit are not yet in the archive",
)
def _pitr_rpo_breached(f: Facts) -> Outcome:
    st, limit = f.archive, f.settings.alert_pitr_rpo_seconds
    if st is None or st.standing_by:
        return False, None, limit
    lag = f.age(st.caught_up_timestamp)
    return lag > limit, lag, limit


@condition("MongoBackupPitrGap", "warning", "The retained oplog archive has a gap")
def _pitr_gap(f: Facts) -> Outcome:
    st = f.archive
    return (st is not None and st.gaps > 0), (float(st.gaps) if st else None), 0.0


@condition(
    "MongoBackupOplogWindowShort",
    "warning",
    "The server's oplog holds less than the backup interval plus a margin",
)
def _oplog_window_short(f: Facts) -> Outcome:
    st, limit = f.archive, f.settings.oplog_window_min_seconds
    seconds = st.server_window.seconds if st is not None else 0.0
    return 0 < seconds < limit, seconds or None, limit


_since: dict[str, float] = {}
_since_lock = threading.Lock()


def _firing_since(name: str, firing: bool, now: float) -> float | None:
    """When condition ``name`` started firing, for the since-when column; None while it does not."""
    with _since_lock:
        if not firing:
            _since.pop(name, None)
            return None
        return _since.setdefault(name, now)


def evaluate(
    settings: Settings,
    service: BackupService,
    health: HealthMonitor,
    summary: CatalogSummary | None = None,
    now: float | None = None,
    pitr: PitrState | None = None,
) -> list[dict[str, Any]]:
    """Every condition with its state. Reads the catalog unless a cached ``summary`` is given."""
    facts = Facts(
        settings,
        summary or summarize_catalog(service.catalog.load()),
        health.snapshot,
        clock.timestamp() if now is None else now,
        pitr,
    )
    out = []
    for name, severity, text, check in CONDITIONS:
        firing, value, threshold = check(facts)
        out.append(
            {
                "name": name,
                "severity": severity,
                "summary": text,
                "active": firing,
                "since": _firing_since(name, firing, facts.now),
                "value": value,
                "threshold": threshold,
            }
        )
    return out


def fetch_alertmanager(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """This sidecar's active alerts from Alertmanager's v2 API (blocking: call in a thread)."""
    query = url.rstrip("/") + "/api/v2/alerts?active=true&silenced=false&inhibited=false"
    with urllib.request.urlopen(query, timeout=timeout) as response:
        alerts = json.load(response)
    return [
        {
            "name": a["labels"].get("alertname"),
            "severity": a["labels"].get("severity"),
            "startsAt": a.get("startsAt"),
            "summary": a.get("annotations", {}).get("summary"),
            "labels": a["labels"],
        }
        for a in alerts
        if str(a.get("labels", {}).get("alertname", "")).startswith("MongoBackup")
    ]
