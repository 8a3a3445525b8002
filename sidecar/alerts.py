"""The local view of the alert conditions that alerts/mongobackup.rules.yml evaluates in Prometheus.

Both read the same thresholds (the SIDECAR_ALERT_* settings; Prometheus gets them through the
``mongobackup_alert_threshold_*`` gauges), so the endpoint and Alertmanager agree.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.config import Settings
from sidecar.health import HealthMonitor, HealthSnapshot
from sidecar.metrics import CatalogSummary, summarize_catalog
from sidecar.pitr.state import PitrState
from sidecar.service import BackupService

PROCESS_START = time.time()


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
Check = Callable[[Facts], tuple[bool, float | None, float | None]]


def _backup_too_old(f: Facts) -> tuple[bool, float | None, float | None]:
    ts, limit = f.catalog.last_success_ts, f.settings.alert_backup_max_age_seconds
    return (ts > 0 and f.age(ts) > limit), (f.age(ts) if ts else None), limit


def _never_succeeded(f: Facts) -> tuple[bool, float | None, float | None]:
    uptime, limit = f.age(PROCESS_START), f.settings.alert_backup_max_age_seconds
    return (f.catalog.last_success_ts == 0 and uptime > limit), uptime, limit


def _last_failed(f: Facts) -> tuple[bool, float | None, float | None]:
    return f.catalog.last_success == 0, float(f.catalog.last_success), 1.0


def _verify_failed(f: Facts) -> tuple[bool, float | None, float | None]:
    failed = [lv for lv in ("quick", "full") if f.catalog.verify.get(lv, {}).get("last_success", 1) == 0]
    return bool(failed), 0.0 if failed else 1.0, 1.0


def _level_failed(level: str, f: Facts) -> tuple[bool, float | None, float | None]:
    ok = f.catalog.verify.get(level, {}).get("last_success", 1)
    return ok == 0, float(ok), 1.0


def _drill_failed(f: Facts) -> tuple[bool, float | None, float | None]:
    return _level_failed("drill", f)


def _pitr_verify_failed(f: Facts) -> tuple[bool, float | None, float | None]:
    return _level_failed("pitr", f)


def _level_too_old(level: str, limit: float, f: Facts) -> tuple[bool, float | None, float | None]:
    """Only once a backup exists: a fresh install has nothing to test yet."""
    if not f.catalog.last_success_ts:
        return False, None, limit
    last = f.catalog.verify.get(level, {}).get("last_success_ts", 0.0)
    age = f.age(last or f.catalog.last_success_ts)
    return age > limit, age, limit


def _verify_too_old(f: Facts) -> tuple[bool, float | None, float | None]:
    return _level_too_old("full", f.settings.alert_verify_max_age_seconds, f)


def _drill_too_old(f: Facts) -> tuple[bool, float | None, float | None]:
    return _level_too_old("drill", f.settings.alert_drill_max_age_seconds, f)


def _size_dropped(f: Facts) -> tuple[bool, float | None, float | None]:
    base, ratio = f.catalog.size_baseline, f.settings.alert_size_drop_ratio
    if base <= 0:
        return False, None, ratio
    return f.catalog.last_size < ratio * base, f.catalog.last_size / base, ratio


def _disk_low(f: Facts) -> tuple[bool, float | None, float | None]:
    total, ratio = f.health.disk_total_bytes, f.settings.alert_disk_free_min_ratio
    if total <= 0:
        return False, None, ratio
    free_ratio = f.health.disk_free_bytes / total
    return free_ratio < ratio, free_ratio, ratio


def _disk_will_not_fit(f: Facts) -> tuple[bool, float | None, float | None]:
    free, need = float(f.health.disk_free_bytes), f.catalog.last_size
    return (f.health.checked_at > 0 and free < need), free, need


def _mongodb_down(f: Facts) -> tuple[bool, float | None, float | None]:
    return (f.health.checked_at > 0 and not f.health.mongodb_up), float(f.health.mongodb_up), 1.0


def _pitr_rpo_breached(f: Facts) -> tuple[bool, float | None, float | None]:
    st, limit = f.archive, f.settings.alert_pitr_rpo_seconds
    if st is None:
        return False, None, limit
    lag = f.age(st.caught_up_timestamp)
    return lag > limit, lag, limit


def _pitr_gap(f: Facts) -> tuple[bool, float | None, float | None]:
    st = f.archive
    return (st is not None and st.gaps > 0), (float(st.gaps) if st else None), 0.0


def _oplog_window_short(f: Facts) -> tuple[bool, float | None, float | None]:
    st, limit = f.archive, f.settings.oplog_window_min_seconds
    seconds = st.server_window.seconds if st is not None else 0.0
    return 0 < seconds < limit, seconds or None, limit


CONDITIONS: tuple[tuple[str, str, str, Check], ...] = (
    (
        "MongoBackupTooOld",
        "critical",
        "The newest successful backup is older than the threshold",
        _backup_too_old,
    ),
    (
        "MongoBackupNoSuccessSinceStart",
        "critical",
        "No successful backup since the sidecar started",
        _never_succeeded,
    ),
    ("MongoBackupLastFailed", "critical", "The newest backup attempt failed", _last_failed),
    ("MongoBackupVerifyFailed", "critical", "The newest integrity test failed", _verify_failed),
    (
        "MongoBackupVerifyTooOld",
        "warning",
        "No passing full integrity test within the threshold",
        _verify_too_old,
    ),
    ("MongoBackupDrillFailed", "critical", "The newest restore drill failed", _drill_failed),
    ("MongoBackupDrillTooOld", "warning", "No passing restore drill within the threshold", _drill_too_old),
    (
        "MongoBackupPitrVerifyFailed",
        "critical",
        "The oplog archive does not reproduce the newest base backup",
        _pitr_verify_failed,
    ),
    (
        "MongoBackupSizeDropped",
        "warning",
        "The newest backup is much smaller than the ones before",
        _size_dropped,
    ),
    ("MongoBackupDiskLow", "warning", "Free space on the backup disk is below the threshold", _disk_low),
    (
        "MongoBackupDiskNoRoomForNext",
        "critical",
        "The backup disk cannot hold another backup",
        _disk_will_not_fit,
    ),
    ("MongoBackupMongoDBDown", "critical", "MongoDB does not answer the sidecar's ping", _mongodb_down),
    (
        "MongoBackupPitrRpoBreached",
        "critical",
        "Oplog entries older than the RPO limit are not yet in the archive",
        _pitr_rpo_breached,
    ),
    ("MongoBackupPitrGap", "warning", "The retained oplog archive has a gap", _pitr_gap),
    (
        "MongoBackupOplogWindowShort",
        "warning",
        "The server's oplog holds less than the backup interval plus a margin",
        _oplog_window_short,
    ),
)


class _FiringSince:
    """Remembers when each condition started firing, for the since-when column."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, name: str, firing: bool, now: float) -> float | None:
        with self._lock:
            if not firing:
                self._since.pop(name, None)
                return None
            return self._since.setdefault(name, now)


_firing_since = _FiringSince()


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
        time.time() if now is None else now,
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
                "since": _firing_since.update(name, firing, facts.now),
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
