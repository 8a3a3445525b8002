"""Tiered retention planning (pure): tiers, time zones, maximum age, and the rules across destinations."""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo

import pytest

from sidecar.store.retention import Policy, keep_reasons, plan, upload_candidates
from sidecar.text import iso_utc

NOW = dt.datetime(2025, 6, 15, 3, 0, tzinfo=dt.UTC)
SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")


def entry(at: dt.datetime, status: str = "completed", where: tuple[str, ...] = ("local",)) -> dict:
    return {
        "fileName": f"b-{at:%Y-%m-%dT%H-%M-%S}.gz",
        "createdAt": iso_utc(at),
        "status": status,
        "locations": list(where),
    }


def daily_history(days: int, where: tuple[str, ...] = ("local",), hour: int = 17) -> list[dict]:
    """One backup a day at 02:00 Seoul (17:00 UTC the day before), oldest first."""
    first = (NOW - dt.timedelta(days=days)).replace(hour=hour, minute=0)
    return [entry(first + dt.timedelta(days=i), where=where) for i in range(days)]


def names(removals, destination=None) -> set[str]:
    return {r.file_name for r in removals if destination is None or r.destination == destination}


def classic_rule(entries: list[dict], now: dt.datetime, days: int, min_count: int) -> set[tuple[str, str]]:
    """The reference model of retention without tiers: past ``days`` goes, the newest ``min_count`` good
    ones stay, running entries stay; failed entries go by age alone."""
    cutoff = now - dt.timedelta(days=days)
    good = sorted((e for e in entries if e["status"] == "completed"), key=lambda e: e["createdAt"])
    protected = {e["fileName"] for e in good[-min_count:]}
    return {
        (e["fileName"], e["status"])
        for e in entries
        if e["status"] != "running" and e["fileName"] not in protected and e["createdAt"] < iso_utc(cutoff)
    }


def test_without_tiers_the_plan_is_the_classic_rule():
    """Tiers off and one destination: exactly the reference model's answer, on many random catalogs."""
    rng = random.Random(5)
    for _ in range(200):
        entries = [
            entry(
                NOW - dt.timedelta(hours=rng.randrange(0, 24 * 90)),
                status=rng.choice(["completed", "completed", "completed", "failed", "running"]),
            )
            for _ in range(rng.randrange(0, 25))
        ]
        entries = list({e["fileName"]: e for e in entries}.values())
        days, count = rng.randrange(1, 60), rng.randrange(1, 10)
        tiered = plan(entries, NOW, {"local": Policy(days=days, keep_last=count)})
        assert {(r.file_name, r.status) for r in tiered} == classic_rule(entries, NOW, days, count)
        assert all(r.destination == "local" for r in tiered)


def test_daily_weekly_monthly_tiers_keep_the_newest_of_each_period():
    entries = daily_history(400)
    policy = Policy(days=3, keep_last=2, daily=10, weekly=6, monthly=12)
    kept = keep_reasons(entries, NOW, policy, SEOUL)
    local_days = {
        e["fileName"]: dt.datetime.fromisoformat(e["createdAt"].replace("Z", "+00:00"))
        .astimezone(SEOUL)
        .date()
        for e in entries
    }
    today = NOW.astimezone(SEOUL).date()
    daily = {n for n, r in kept.items() if r.startswith("daily")}
    weekly = {n for n, r in kept.items() if r.startswith("weekly")}
    monthly = {n for n, r in kept.items() if r.startswith("monthly")}
    # each kept archive is the newest of its period, and periods are within the window
    for name in daily:
        assert (today - local_days[name]).days < 10
    assert all(local_days[n].weekday() == 6 or (today - local_days[n]).days < 7 for n in weekly)  # Sundays
    months = sorted((local_days[n].year, local_days[n].month) for n in monthly)
    assert len(set(months)) == len(months) and len(months) <= 12
    for name in monthly:
        day = local_days[name]
        last_of_month = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        assert day == last_of_month or (day.year, day.month) == (today.year, today.month)
    # 10 days + earlier Sundays of 6 weeks + earlier month ends of 12 months, no duplicates
    assert 10 <= len(kept) <= 10 + 6 + 12
    assert min(local_days[n] for n in kept) >= dt.date(2024, 7, 1)  # 12 months: July 2024 .. June 2025
    removals = plan(entries, NOW, {"local": policy}, SEOUL)
    assert names(removals) == {e["fileName"] for e in entries} - set(kept)
    assert all("not kept by a tier" in r.reason for r in removals)


def test_days_are_counted_in_the_configured_time_zone():
    # 14:30 UTC is 23:30 in Seoul; 15:30 UTC is 00:30 the next day in Seoul
    late = entry(dt.datetime(2025, 6, 1, 14, 30, tzinfo=dt.UTC))
    after_midnight = entry(dt.datetime(2025, 6, 1, 15, 30, tzinfo=dt.UTC))
    old = [late, after_midnight, entry(dt.datetime(2025, 6, 14, 17, 0, tzinfo=dt.UTC))]
    policy = Policy(days=1, keep_last=1, daily=30)
    in_seoul = keep_reasons(old, NOW, policy, SEOUL)
    in_utc = keep_reasons(old, NOW, policy, dt.UTC)
    assert late["fileName"] in in_seoul and after_midnight["fileName"] in in_seoul
    assert late["fileName"] not in in_utc and after_midnight["fileName"] in in_utc


def test_maximum_age_caps_every_tier_but_never_the_newest():
    entries = daily_history(200)
    kept = keep_reasons(entries, NOW, Policy(days=30, keep_last=3, monthly=12, max_age_days=60), SEOUL)
    ages = {
        e["fileName"]: (NOW - dt.datetime.fromisoformat(e["createdAt"][:-1] + "+00:00")).days for e in entries
    }
    assert max(ages[n] for n in kept) < 60
    ancient = [entry(NOW - dt.timedelta(days=500)), entry(NOW - dt.timedelta(days=400))]
    kept = keep_reasons(ancient, NOW, Policy(days=1, keep_last=1, max_age_days=30), SEOUL)
    assert list(kept) == [ancient[1]["fileName"]]  # the newest good archive stays, however old


def test_each_destination_has_its_own_policy():
    entries = daily_history(60, where=("local", "s3"))
    policies = {"local": Policy(days=7, keep_last=3), "s3": Policy(days=7, keep_last=3, weekly=8)}
    removals = plan(entries, NOW, policies, SEOUL)
    local, s3 = names(removals, "local"), names(removals, "s3")
    assert len(entries) - len(local) == 7  # the last 7 days
    assert s3 < local  # the bucket keeps the weekly ones the disk lets go
    assert len(local - s3) in (7, 8)


def test_the_last_copy_stays_while_its_upload_is_pending():
    """Local keeps a week, the bucket keeps months; an archive not yet in the bucket is not lost."""
    uploaded = daily_history(40, where=("local", "s3"))
    pending = entry(NOW - dt.timedelta(days=20))  # its upload failed: local only
    policies = {"local": Policy(days=7, keep_last=1), "s3": Policy(days=60, keep_last=1)}
    removals = plan([*uploaded, pending], NOW, policies, SEOUL)
    assert pending["fileName"] not in names(removals)
    assert names(removals, "s3") == set()
    assert len(names(removals, "local")) == len(uploaded) - 7
    assert [
        e["fileName"] for e in upload_candidates([*uploaded, pending], NOW, "s3", policies["s3"], SEOUL)
    ] == [pending["fileName"]]
    # when the bucket's policy does not want it either, it goes like any other
    removals = plan([*uploaded, pending], NOW, {**policies, "s3": Policy(days=7, keep_last=1)}, SEOUL)
    assert pending["fileName"] in names(removals, "local")


def test_the_newest_good_archive_survives_everywhere():
    entries = [entry(NOW - dt.timedelta(days=d), where=("local", "s3")) for d in (300, 200, 100)]
    entries.append(entry(NOW - dt.timedelta(days=50), status="failed"))
    policies = {"local": Policy(days=1, keep_last=1), "s3": Policy(days=1, keep_last=1, max_age_days=10)}
    removals = plan(entries, NOW, policies, SEOUL)
    newest = entries[2]["fileName"]
    assert newest not in names(removals)
    assert names(removals, "local") == {
        entries[0]["fileName"],
        entries[1]["fileName"],
        entries[3]["fileName"],
    }
    assert names(removals, "s3") == {entries[0]["fileName"], entries[1]["fileName"]}
    assert "maximum age" in next(r.reason for r in removals if r.destination == "s3")


def test_copies_in_unconfigured_destinations_are_left_alone_and_running_entries_never_go():
    entries = [
        entry(NOW - dt.timedelta(days=90), where=("s3",)),
        entry(NOW - dt.timedelta(days=80), status="running"),
        entry(NOW - dt.timedelta(days=1)),
    ]
    removals = plan(entries, NOW, {"local": Policy(days=7, keep_last=1)}, SEOUL)
    assert removals == []


@pytest.mark.parametrize("keep_last", [0, 1])
def test_keep_last_is_at_least_one(keep_last):
    entries = [entry(NOW - dt.timedelta(days=d)) for d in (90, 60)]
    removals = plan(entries, NOW, {"local": Policy(days=1, keep_last=keep_last)})
    assert names(removals) == {entries[0]["fileName"]}


def test_policy_describes_itself():
    text = Policy(days=7, keep_last=3, daily=14, weekly=8, monthly=12, max_age_days=400).describe()
    assert text == (
        "last 3, all within 7 days, 1 per day for 14 days, 1 per week for 8 weeks, "
        "1 per month for 12 months, none older than 400 days"
    )


def test_the_reasons_a_copy_goes_are_exact():
    plain = entry(NOW - dt.timedelta(days=40, hours=1))
    failed = entry(NOW - dt.timedelta(days=35, hours=1))
    failed["lastVerification"] = {"level": "full", "ok": False, "at": failed["createdAt"]}
    at_the_cap = entry(NOW - dt.timedelta(days=90, hours=5))  # 90 whole days: at the maximum age
    newest = entry(NOW - dt.timedelta(days=1))
    policy = Policy(days=30, keep_last=1, max_age_days=90)
    reasons = {
        r.file_name: r.reason for r in plan([plain, failed, at_the_cap, newest], NOW, {"local": policy})
    }
    assert reasons == {
        plain["fileName"]: "older than 30 days (40 days) and not kept by a tier "
        "(last 1, all within 30 days, none older than 90 days)",
        failed["fileName"]: "older than 30 days (35 days) and not kept by a tier "
        "(last 1, all within 30 days, none older than 90 days); its newest integrity test failed",
        at_the_cap["fileName"]: "older than the maximum age of 90 days (90 days)",
    }


def test_upload_candidates_judge_tiers_in_the_zone_and_come_oldest_first():
    """02:00 and 23:30 in Seoul each day: the daily tier wants each Seoul day's 23:30 backup (in UTC
    days it would want the 02:00 ones). Listed in catalog order newest first, they come oldest first."""
    days = [dt.date(2025, 6, 11) + dt.timedelta(days=k) for k in range(4)]
    at = [dt.datetime.combine(d, t, SEOUL) for d in days for t in (dt.time(2), dt.time(23, 30))]
    entries = [entry(moment.astimezone(dt.UTC)) for moment in reversed(at)]
    policy = Policy(days=1, keep_last=1, daily=5)
    chosen = upload_candidates(entries, NOW, "s3", policy, "Asia/Seoul")  # the zone as configured
    assert [e["createdAt"] for e in chosen] == [
        iso_utc(dt.datetime.combine(d, dt.time(23, 30), SEOUL)) for d in days
    ]


def test_the_description_counts_at_least_one_kept():
    assert Policy(days=7, keep_last=0).describe() == "last 1, all within 7 days"
