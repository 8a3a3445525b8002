"""The calendar sweep (tests/calendar_sweep.py): archive tiers, slice retention and the daily log files
at fixed moments on the calendar's edges. Each case asserts the exact set kept and the reason of each:
by hand where the edge is the point (an empty current week or month at midnight, the ISO week of
1 January, 29 February, the New York DST changes), and against a reference model written another way
(ISO calendar weeks, month by month) over a richer history at every moment. Pure and fast: no server.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path

import pytest
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.config import load_settings
from sidecar.logs import setup_logging, teardown_logging
from sidecar.pitr.record.retention import needed, plan_slices, retained_bases
from sidecar.store.retention import Policy, keep_reasons, plan
from sidecar.text import iso_utc
from sidecar.time_input import parse_iso
from tests.calendar_sweep import Moment, history, sweep

TWO_A_DAY = (dt.time(2, 0), dt.time(23, 30))  # the default schedule's 02:00, and one just before midnight


def name_of(at: dt.datetime) -> str:
    return f"b-{at.astimezone(dt.UTC):%Y-%m-%dT%H-%M}Z.gz"


def local(moment: Moment, text: str) -> str:
    """The name of the archive taken at ``text`` (``YYYY-MM-DD HH:MM``) in the moment's zone."""
    return name_of(dt.datetime.fromisoformat(text).replace(tzinfo=moment.tz))


def archives(times: list[dt.datetime]) -> list[dict]:
    return [{"fileName": name_of(at), "createdAt": iso_utc(at), "status": "completed"} for at in times]


@sweep()
def test_each_moment_is_the_date_it_says_there(moment: Moment) -> None:
    assert moment.at.astimezone(moment.tz).date() == moment.local_day


# The tiers of one small policy at the edges, by hand (two backups a day: 02:00 and 23:30 local).
SMALL = Policy(days=1, keep_last=1, daily=2, weekly=2, monthly=2)
NEWEST, YOUNG = "one of the newest 1", "younger than 1 days"
BY_HAND = {
    "before-midnight-seoul": {  # Sunday 23:59:59
        "2026-12-13 23:30": NEWEST,
        "2026-12-13 02:00": YOUNG,
        "2026-12-12 23:30": "daily tier (2026-12-12)",
        "2026-12-06 23:30": "weekly tier (2026-W49)",
        "2026-11-30 23:30": "monthly tier (2026-11)",
    },
    "midnight-seoul": {  # Monday 00:00: this week and this day hold nothing yet, and still count
        "2026-12-13 23:30": NEWEST,
        "2026-12-13 02:00": YOUNG,
        "2026-11-30 23:30": "monthly tier (2026-11)",
    },
    "before-midnight-utc": {
        "2027-02-28 23:30": NEWEST,
        "2027-02-28 02:00": YOUNG,
        "2027-02-27 23:30": "daily tier (2027-02-27)",
        "2027-02-21 23:30": "weekly tier (2027-W07)",
        "2027-01-31 23:30": "monthly tier (2027-01)",
    },
    "midnight-utc": {  # 1 March 00:00: a new day, week and month at once
        "2027-02-28 23:30": NEWEST,
        "2027-02-28 02:00": YOUNG,
    },
    "new-year": {  # 1 January 2027 is in ISO week 2026-W53
        "2027-01-01 02:00": NEWEST,
        "2026-12-31 23:30": YOUNG,
        "2026-12-27 23:30": "weekly tier (2026-W52)",
    },
    "leap-day": {
        "2028-02-29 02:00": NEWEST,
        "2028-02-28 23:30": YOUNG,
        "2028-02-27 23:30": "weekly tier (2028-W08)",
        "2028-01-31 23:30": "monthly tier (2028-01)",
    },
    "new-york-falls-back": {  # the second 01:30; 31 October 23:30 EDT is 1 November in UTC
        "2026-10-31 23:30": NEWEST,
        "2026-10-25 23:30": "weekly tier (2026-W43)",
    },
    "new-york-springs-forward": {  # 02:00 does not happen: the backup runs at 03:00 EDT
        "2027-03-14 02:00": NEWEST,
        "2027-03-13 23:30": YOUNG,
        "2027-03-07 23:30": "weekly tier (2027-W09)",
        "2027-02-28 23:30": "monthly tier (2027-02)",
    },
}


@sweep(*BY_HAND)
def test_tiers_at_the_edges_by_hand(moment: Moment) -> None:
    entries = archives(history(moment, 70, TWO_A_DAY))
    expected = {local(moment, at): why for at, why in BY_HAND[moment.label].items()}
    assert keep_reasons(entries, moment.at, SMALL, moment.tz) == expected
    removals = plan(entries, moment.at, {"local": SMALL}, moment.tz)
    assert {r.file_name for r in removals} == {e["fileName"] for e in entries} - set(expected)


def reference_keep(entries: list[dict], now: dt.datetime, policy: Policy, tz: dt.tzinfo) -> dict[str, str]:
    """store/retention.py's rules, said another way: for each period, look up its newest good archive."""
    newest_first = sorted(entries, key=lambda e: parse_iso(e["createdAt"]), reverse=True)
    good = [e for e in newest_first if (e.get("lastVerification") or {}).get("ok") is not False]
    kept_last = {e["fileName"] for e in good[: max(policy.keep_last, 1)]}
    verified = next((e["fileName"] for e in good if (e.get("lastVerification") or {}).get("ok")), None)
    cap = now - dt.timedelta(days=policy.max_age_days) if policy.max_age_days else None
    alive = [e for e in good if cap is None or parse_iso(e["createdAt"]) >= cap]
    today = now.astimezone(tz).date()

    def day(e: dict) -> dt.date:
        return parse_iso(e["createdAt"]).astimezone(tz).date()

    months, (year, month) = [], (today.year, today.month)
    for _ in range(policy.monthly):
        months.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    periods = [
        ("daily", [today - dt.timedelta(days=i) for i in range(policy.daily)], day, dt.date.isoformat),
        (
            "weekly",
            [(today - dt.timedelta(weeks=i)).isocalendar()[:2] for i in range(policy.weekly)],
            lambda e: day(e).isocalendar()[:2],
            lambda w: f"{w[0]}-W{w[1]:02d}",
        ),
        ("monthly", months, lambda e: (day(e).year, day(e).month), lambda m: f"{m[0]}-{m[1]:02d}"),
    ]
    tiers: dict[str, str] = {}
    for tier, wanted, period_of, label in periods:
        for period in wanted:
            best = next((e for e in alive if period_of(e) == period), None)
            if best is not None:
                tiers.setdefault(best["fileName"], f"{tier} tier ({label(period)})")
    reasons = {}
    for e in newest_first:
        name, created = e["fileName"], parse_iso(e["createdAt"])
        capped = cap is not None and created < cap
        if name in kept_last:
            reasons[name] = f"one of the newest {max(policy.keep_last, 1)}"
        elif name == verified:
            reasons[name] = "the newest archive that passed its integrity test"
        elif not capped and created >= now - dt.timedelta(days=policy.days):
            reasons[name] = f"younger than {policy.days} days"
        elif name in tiers:
            reasons[name] = tiers[name]
    return reasons


def rich_history(moment: Moment) -> list[dict]:
    """Three backups a day for 420 days, some failing their newest test, some passing it."""
    times = history(moment, 420, (dt.time(1, 30), dt.time(2, 30), dt.time(23, 45)))
    entries = archives(times)
    for index, entry in enumerate(entries):
        if index % 7 == 3 or index == len(entries) - 1:  # the newest among them: it fails its test
            entry["lastVerification"] = {"level": "full", "ok": False, "at": entry["createdAt"]}
        elif index % 97 == 5:
            entry["lastVerification"] = {"level": "full", "ok": True, "at": entry["createdAt"]}
    return entries


POLICIES = {
    "tiers": Policy(days=3, keep_last=2, daily=7, weekly=5, monthly=14),
    "capped": Policy(days=2, keep_last=1, daily=5, weekly=3, monthly=13, max_age_days=60),
}


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
@sweep()
def test_tiers_against_the_reference_model(moment: Moment, policy: Policy) -> None:
    entries = rich_history(moment)
    kept = keep_reasons(entries, moment.at, policy, moment.tz)
    assert kept == reference_keep(entries, moment.at, policy, moment.tz)
    tiers = {why.split(" (")[0] for why in kept.values() if "tier" in why}
    assert len(tiers) >= 2  # the tiers are exercised (at most one is masked by a stronger reason)
    assert "the newest archive that passed its integrity test" in kept.values()


# Slices: four a day (six hours each, on the UTC quarter days), base backups at 02:00 local with a
# 30-second cut, 45 days back from the moment.
SIX_HOURS = 6 * 3600


def slice_history(moment: Moment) -> tuple[list[dict], list[dict]]:
    start = int((moment.at - dt.timedelta(days=45)).timestamp()) // SIX_HOURS * SIX_HOURS
    slices = []
    while start + SIX_HOURS <= moment.at.timestamp():
        first, last = {"t": start + 1, "i": 1}, {"t": start + SIX_HOURS, "i": 1}
        name = f"oplog-{start + 1}-1.bson.gz"
        slices.append({"fileName": name, "first": first, "last": last, "createdAt": iso_utc(moment.at)})
        start += SIX_HOURS
    bases = []
    for at in history(moment, 45, (dt.time(2, 0),)):
        t = int(at.timestamp())
        cut = {"start": {"t": t - 30, "i": 1}, "end": {"t": t, "i": 1}, "entries": 2}
        bases.append({"fileName": name_of(at), "createdAt": iso_utc(at), "status": "completed", "oplog": cut})
    return slices, bases


def reference_needed(slices: list[dict], bases: list, now: dt.datetime, pitr_days: int) -> dict[str, str]:
    """pitr/record/retention.py's rule for one destination, slice by slice."""
    if not bases:
        return {s["fileName"]: "no retained base backup yet" for s in slices}
    cutoff = (now - dt.timedelta(days=pitr_days)).timestamp() if pitr_days else None
    out = {slices[-1]["fileName"]: "the newest slice (the archiver resumes after it)"}
    for s in slices[:-1]:
        first, last = Timestamp(s["first"]["t"], s["first"]["i"]), Timestamp(s["last"]["t"], s["last"]["i"])
        for index, base in enumerate(bases):
            following = bases[index + 1].end if index + 1 < len(bases) else None
            if base.start is not None and last >= base.start and first <= base.end:
                out[s["fileName"]] = f"holds the oplog cut of {base.name}"
                break
            window_kept = cutoff is None or following is None or following.time >= cutoff
            if window_kept and last > base.end and (following is None or first <= following):
                out[s["fileName"]] = f"in the point-in-time window of {base.name}"
                break
    return out


SLICE_POLICIES = {"local": Policy(days=3, keep_last=1), "s3": Policy(days=3, keep_last=1, weekly=3)}


@pytest.mark.parametrize("pitr_days", [0, 2])
@sweep()
def test_slice_retention_against_the_reference_model(moment: Moment, pitr_days: int) -> None:
    slices, base_entries = slice_history(moment)
    keep, bases = {}, {}
    for destination, policy in SLICE_POLICIES.items():
        bases[destination] = retained_bases(base_entries, moment.at, policy, moment.tz)
        wanted = keep_reasons(base_entries, moment.at, policy, moment.tz)
        assert [b.name for b in bases[destination]] == sorted(wanted)  # names sort by time
        keep[destination] = needed(slices, bases[destination], moment.at, pitr_days)
        assert keep[destination] == reference_needed(slices, bases[destination], moment.at, pitr_days)
    assert set(keep["local"]) <= set(keep["s3"])  # the bucket's weekly tier reaches further back
    # every slice is local only (none uploaded yet): what the bucket wants keeps its one copy
    document = {"slices": [{**s, "locations": ["local"]} for s in slices], "deleting": {}}
    removals = plan_slices(document, keep, bases)
    assert {(r.file_name, r.destination) for r in removals} == {
        (s["fileName"], "local") for s in slices if s["fileName"] not in {*keep["local"], *keep["s3"]}
    }


@sweep("midnight-seoul", "before-midnight-seoul")
def test_the_bucket_keeps_last_weeks_slices_until_midnight_by_hand(moment: Moment) -> None:
    """Sunday 23:59:59 in Seoul the bucket's weekly tier (3 weeks) still holds the week before last's
    newest base (29 November): its window is kept. At Monday 00:00 that week drops out of three."""
    slices, base_entries = slice_history(moment)
    bases = retained_bases(base_entries, moment.at, SLICE_POLICIES["s3"], moment.tz)
    oldest = {"before-midnight-seoul": "2026-11-29 02:00", "midnight-seoul": "2026-12-06 02:00"}
    assert bases[0].name == local(moment, oldest[moment.label])
    kept = needed(slices, bases, moment.at)
    first_kept = min(kept, key=lambda name: next(s["first"]["t"] for s in slices if s["fileName"] == name))
    assert kept[first_kept] == f"holds the oplog cut of {bases[0].name}"
    assert next(s for s in slices if s["fileName"] == first_kept)["last"]["t"] >= bases[0].start.time


# Daily log files: the file a record goes to and the files the cleanup keeps (7 days).
OLDEST_KEPT = {  # by hand: seven days before the local date
    "leap-day": "2028-02-22",
    "new-year": "2026-12-25",
    "first-of-month": "2026-11-24",
    "midnight-utc": "2027-02-22",
    "midnight-seoul": "2026-12-07",
    "before-midnight-seoul": "2026-12-06",
    "new-york-springs-forward": "2027-03-07",
}


@sweep()
def test_daily_log_files(moment: Moment, tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SIDECAR_MONGODB_URI": "mongodb://db.example:27017",
            "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
            "SIDECAR_LOG_DIR": str(tmp_path / "logs"),
            "SIDECAR_TIMEZONE": moment.timezone,
        }
    )
    settings.log_dir.mkdir()
    days = [moment.local_day - dt.timedelta(days=back) for back in range(1, 11)]
    for day in days:
        (settings.log_dir / f"combined-{day}.log").write_text("{}\n")
    with clock.set_to(moment.at):
        setup_logging(settings, stream=io.StringIO())
        try:
            logging.getLogger("sidecar.calendar").error("at %s", moment.label)
        finally:
            teardown_logging()
    oldest = moment.local_day - dt.timedelta(days=7)
    if moment.label in OLDEST_KEPT:
        assert oldest.isoformat() == OLDEST_KEPT[moment.label]
    today = [f"combined-{moment.local_day}.log", f"error-{moment.local_day}.log"]
    assert sorted(p.name for p in settings.log_dir.iterdir()) == sorted(
        [f"combined-{d}.log" for d in days if d >= oldest] + today
    )
    (line,) = (settings.log_dir / today[1]).read_text().splitlines()
    assert json.loads(line)["message"] == f"at {moment.label}"
    assert json.loads(line)["time"] == iso_utc(moment.at)  # the record is dated by the clock
