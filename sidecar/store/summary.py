"""What the metrics and the alerts read from ``backup-info.json``, computed once per refresh: the
newest attempt and success, the size baseline, each location's archives, each level's newest result
and where the newest proofs ran."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from sidecar.store.catalog import LEVELS, SAFETY_TRIGGER, STATUS_COMPLETED, Entry, is_usable
from sidecar.time_input import parse_iso

DESTINATIONS = ("local",)
BASELINE_WINDOW = 7  # the size baseline: the median of this many usable backups before the newest


@dataclass
class CatalogSummary:
    """What the gauges need from the catalog, computed once per refresh."""

    last_success_ts: float = 0.0
    last_attempt_ts: float = 0.0
    last_success: int = 1
    last_size: float = 0.0
    last_duration: float = 0.0
    size_baseline: float = 0.0
    archives: dict[str, dict[str, float]] = field(default_factory=dict)
    verify: dict[str, dict[str, float]] = field(default_factory=dict)
    # drill, pitr: where the newest proof ran (integrity/proof_server.py) and the bytes it wrote there
    proofs: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: dict[str, float] = field(default_factory=dict)  # off-site destination -> newest upload


def _end_time(entry: Entry) -> float:
    stamp = entry.get("finishedAt") or entry["createdAt"]
    return parse_iso(stamp).timestamp()


def summarize_catalog(entries: list[Entry], destinations: tuple[str, ...] = DESTINATIONS) -> CatalogSummary:
    summary = CatalogSummary()
    # the backup series describe regular backups; a restore's partial safety copy is no backup run
    regular = [e for e in entries if e.get("trigger") != SAFETY_TRIGGER]
    finished = [e for e in regular if e.get("status") in (STATUS_COMPLETED, "failed")]
    good = [e for e in entries if is_usable(e)]  # the newest of them is newest_usable(entries)
    stored = [e for e in entries if e.get("status") == STATUS_COMPLETED]  # every archive takes space
    if finished:
        newest = max(finished, key=_end_time)
        summary.last_attempt_ts = _end_time(newest)
        summary.last_success = int(newest.get("status") == STATUS_COMPLETED)
    if good:
        good.sort(key=_end_time)
        summary.last_success_ts = _end_time(good[-1])
        summary.last_size = float(good[-1].get("sizeBytes", 0))
        summary.last_duration = float(good[-1].get("durationSeconds", 0))
        previous = [float(e.get("sizeBytes", 0)) for e in good[-BASELINE_WINDOW - 1 : -1]]
        summary.size_baseline = statistics.median(previous) if previous else 0.0
    for dest in sorted(set(destinations) | {d for e in stored for d in e.get("locations", ["local"])}):
        here = [e for e in stored if dest in e.get("locations", ["local"])]
        created = [parse_iso(e["createdAt"]).timestamp() for e in here]
        summary.archives[dest] = {
            "count": len(here),
            "bytes": sum(float(e.get("sizeBytes", 0)) for e in here),
            "oldest": min(created, default=0.0),
            "newest": max(created, default=0.0),
        }
        if dest != "local":  # the catalog keeps the upload time, so it survives a restart
            stamps = [((e.get("remote") or {}).get(dest) or {}).get("uploadedAt") for e in entries]
            summary.uploads[dest] = max((parse_iso(t).timestamp() for t in stamps if t), default=0.0)
    for level in LEVELS:
        results = [e["verification"][level] for e in entries if level in (e.get("verification") or {})]
        results = [r for r in results if r.get("at")]
        results.sort(key=lambda r: parse_iso(r["at"]))
        passed = [r for r in results if r.get("ok")]
        summary.verify[level] = {
            "last_run": parse_iso(results[-1]["at"]).timestamp() if results else 0.0,
            "last_success_ts": parse_iso(passed[-1]["at"]).timestamp() if passed else 0.0,
            "last_success": float(bool(results[-1].get("ok"))) if results else 1.0,
        }
        placed = [r for r in results if r.get("server")]
        if placed:
            newest = placed[-1]
            summary.proofs[level] = {
                "server": newest["server"],
                "writtenBytes": float(newest.get("writtenBytes") or 0),
                "at": newest["at"],
            }
    return summary
