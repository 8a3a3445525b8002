"""Retention: which archive copies go, tiered, across destinations.

Pure: catalog entries, a clock and policies in, a plan out.

A good archive is a usable one (``catalog.is_usable``): completed, a regular backup, and its newest
integrity test did not fail. Pre-restore safety copies and archives whose newest test failed count toward
no minimum and no tier: only the age rule keeps them.

One ``Policy`` per destination (``local``, ``s3``). Among the archives a destination holds, it keeps the
union of:

- every archive younger than ``days`` (``SIDECAR_RETENTION_DAYS``; the pre-tier rule, unchanged);
- the newest ``keep_last`` good ones (``SIDECAR_RETENTION_MIN_COUNT``), whatever their age;
- the newest good archive of each of the last ``daily`` calendar days, ``weekly`` ISO weeks and
  ``monthly`` months (in the configured time zone, today / this week / this month included);
- the newest good archive whose newest integrity test passed, whatever its age and the other rules;

and then drops anything older than ``max_age_days`` (0 = no cap) unless ``keep_last`` or the last rule
holds it.

Across destinations: a copy is never removed when it is an archive's last copy and another destination
whose policy wants the archive lacks it (its upload is pending), so a failed upload never costs an
archive; each destination always keeps its newest good copy (``keep_last`` >= 1). Failed or
interrupted entries have no archive; they leave the catalog once older than the local ``days``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.store.catalog import Entry, Status, is_usable, newest_test_passed
from sidecar.store.objects import LOCAL
from sidecar.time_input import parse_iso


@dataclass(frozen=True)
class Removal:
    file_name: str
    status: str
    created_at: str
    reason: str
    destination: str = "local"  # where the copy is removed: local or s3
    kind: str = "archive"  # archive, or slice (an oplog slice, pitr/record/retention.py)


@dataclass(frozen=True)
class Policy:
    days: int = 30
    keep_last: int = 7
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    max_age_days: int = 0

    def describe(self) -> str:
        parts = [f"last {max(self.keep_last, 1)}", f"all within {self.days} days"]
        for count, unit in ((self.daily, "day"), (self.weekly, "week"), (self.monthly, "month")):
            if count:
                parts.append(f"1 per {unit} for {count} {unit}s")
        if self.max_age_days:
            parts.append(f"none older than {self.max_age_days} days")
        return ", ".join(parts)


def locations(entry: Entry) -> list[str]:
    """Where the entry's archive lives; entries from before off-site copies are local."""
    return list(entry.get("locations") or [LOCAL])


def keep_reasons(
    archives: Iterable[Entry], now: dt.datetime, policy: Policy, tz: dt.tzinfo = dt.UTC
) -> dict[str, str]:
    """File name -> why ``policy`` keeps it, for the completed archives ``archives`` (any order)."""
    ordered = sorted(archives, key=lambda e: parse_iso(e["createdAt"]), reverse=True)  # newest first
    kept: dict[str, str] = {}
    good = [e for e in ordered if is_usable(e)]
    for entry in good[: max(policy.keep_last, 1)]:
        kept[entry["fileName"]] = f"one of the newest {max(policy.keep_last, 1)}"
    verified = next((e for e in good if newest_test_passed(e)), None)
    if verified is not None:
        kept.setdefault(verified["fileName"], "the newest archive that passed its integrity test")
    cutoff = now - dt.timedelta(days=policy.days)
    cap = now - dt.timedelta(days=policy.max_age_days) if policy.max_age_days else None
    today = now.astimezone(tz).date()
    windows = (
        ("daily", policy.daily, dt.date.toordinal, today.toordinal() - policy.daily),
        ("weekly", policy.weekly, _week, _week(today) - policy.weekly),
        ("monthly", policy.monthly, _month, _month(today) - policy.monthly),
    )
    seen: dict[str, set[int]] = {name: set() for name, *_ in windows}
    for entry in ordered:
        created = parse_iso(entry["createdAt"])
        if cap is not None and created < cap:
            continue
        name = entry["fileName"]
        if created >= cutoff:
            kept.setdefault(name, f"younger than {policy.days} days")
        if not is_usable(entry):
            continue
        local_day = created.astimezone(tz).date()
        for tier, count, bucket_of, first_excluded in windows:
            bucket = bucket_of(local_day)
            if count and bucket > first_excluded and bucket not in seen[tier]:
                seen[tier].add(bucket)
                kept.setdefault(name, f"{tier} tier ({_label(tier, local_day)})")
    return kept


def plan(
    entries: list[Entry], now: dt.datetime, policies: Mapping[str, Policy], tz: dt.tzinfo | str = dt.UTC
) -> list[Removal]:
    """Which copies to remove from which destination; one Removal per (archive, destination).

    ``policies`` names the configured destinations; a copy in a destination not configured now is
    left alone. An entry whose every copy is removed leaves the catalog.
    """
    if isinstance(tz, str):
        tz = zoneinfo.ZoneInfo(tz)
    archives = [e for e in entries if e.get("status") == Status.COMPLETED]
    present = {d: [e for e in archives if d in locations(e)] for d in policies}
    keep = {d: keep_reasons(present[d], now, p, tz) for d, p in policies.items()}
    wanted = {d: keep_reasons(archives, now, p, tz) for d, p in policies.items()}
    removals: list[Removal] = []
    for entry in archives:
        name, where = entry["fileName"], locations(entry)
        drop = [d for d in where if d in policies and name not in keep[d]]
        if not drop:
            continue
        remaining = [d for d in where if d not in drop]
        pending = [d for d in policies if d not in where and name in wanted[d]]
        if not remaining and pending:
            continue  # the last copy, wanted where it is not yet: keep it until it is uploaded there
        for d in drop:
            removals.append(
                Removal(name, Status.COMPLETED, entry["createdAt"], _why(entry, now, policies[d]), d)
            )
    local_days = policies[LOCAL].days if LOCAL in policies else Policy().days
    cutoff = now - dt.timedelta(days=local_days)
    for entry in entries:
        status = entry.get("status")
        if status in (Status.COMPLETED, Status.RUNNING) or parse_iso(entry["createdAt"]) >= cutoff:
            continue
        age = (now - parse_iso(entry["createdAt"])).days
        why = f"{status} entry older than {local_days} days ({age} days)"
        removals.append(Removal(entry["fileName"], status or "", entry["createdAt"], why, LOCAL))
    return removals


def upload_candidates(
    entries: list[Entry], now: dt.datetime, destination: str, policy: Policy, tz: dt.tzinfo | str = dt.UTC
) -> list[Entry]:
    """Local archives missing from ``destination`` that its policy wants there, oldest first."""
    if isinstance(tz, str):
        tz = zoneinfo.ZoneInfo(tz)
    archives = [e for e in entries if e.get("status") == Status.COMPLETED]
    wanted = keep_reasons(archives, now, policy, tz)
    chosen = [
        e
        for e in archives
        if e["fileName"] in wanted and destination not in locations(e) and LOCAL in locations(e)
    ]
    return sorted(chosen, key=lambda e: parse_iso(e["createdAt"]))


def _why(entry: Entry, now: dt.datetime, policy: Policy) -> str:
    age = (now - parse_iso(entry["createdAt"])).days
    failed = "; its newest integrity test failed" if newest_test_passed(entry) is False else ""
    if policy.max_age_days and age >= policy.max_age_days:
        return f"older than the maximum age of {policy.max_age_days} days ({age} days){failed}"
    return f"older than {policy.days} days ({age} days) and not kept by a tier ({policy.describe()}){failed}"


def _week(day: dt.date) -> int:
    return (day.toordinal() - day.weekday()) // 7  # Monday-based weeks, as ISO weeks


def _month(day: dt.date) -> int:
    return day.year * 12 + day.month - 1


def _label(tier: str, day: dt.date) -> str:
    if tier == "daily":
        return day.isoformat()
    if tier == "weekly":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day:%Y-%m}"
