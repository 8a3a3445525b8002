"""Which archives retention removes. Pure: entries and a clock in, a plan out.

Rules: an archive older than ``days`` goes, but the newest ``min_count`` good ones always stay (so the
newest good one always stays), and failed or interrupted entries older than ``days`` are dropped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sidecar.store.catalog import STATUS_COMPLETED, STATUS_RUNNING, Entry, parse_iso


@dataclass(frozen=True)
class Removal:
    file_name: str
    status: str
    created_at: str
    reason: str
    destination: str = "local"  # where the copy is removed: local or s3 (see store/tiers.py)


def plan_retention(entries: list[Entry], now: dt.datetime, *, days: int, min_count: int) -> list[Removal]:
    cutoff = now - dt.timedelta(days=days)
    good = sorted(
        (e for e in entries if e.get("status") == STATUS_COMPLETED), key=lambda e: parse_iso(e["createdAt"])
    )
    protected = {e["fileName"] for e in good[-max(min_count, 1) :]}
    removals = []
    for entry in entries:
        created = parse_iso(entry["createdAt"])
        if created >= cutoff or entry["fileName"] in protected or entry.get("status") == STATUS_RUNNING:
            continue
        age_days = (now - created).days
        reason = f"older than {days} days ({age_days} days)"
        if entry.get("status") != STATUS_COMPLETED:
            reason = f"{entry.get('status')} entry {reason}"
        removals.append(Removal(entry["fileName"], entry.get("status", ""), entry["createdAt"], reason))
    return removals
