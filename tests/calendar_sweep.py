"""The calendar sweep: the fixed moments at which the retention, tier, slice-retention and daily-log
tests run, chosen to hit the calendar's edges. Each names its zone and, checked by hand, the date it
is there; ``history`` dates a schedule back from it, so the data moves with the date, not the clock
of anything real (a bucket's signer, a server's oplog)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

import pytest

SEOUL, NEW_YORK = "Asia/Seoul", "America/New_York"


@dataclass(frozen=True)
class Moment:
    label: str
    at: dt.datetime  # when, in UTC
    timezone: str  # SIDECAR_TIMEZONE
    local_day: dt.date  # the date it is there (by hand)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


SWEEP = [
    Moment("monday", _utc("2026-12-07T03:00:00"), SEOUL, dt.date(2026, 12, 7)),
    Moment("sunday", _utc("2026-12-13T03:00:00"), SEOUL, dt.date(2026, 12, 13)),
    Moment("first-of-month", _utc("2026-12-01T03:00:00"), SEOUL, dt.date(2026, 12, 1)),
    Moment("last-of-month", _utc("2027-04-30T03:00:00"), SEOUL, dt.date(2027, 4, 30)),
    Moment("new-year", _utc("2027-01-01T03:00:00"), SEOUL, dt.date(2027, 1, 1)),  # ISO week 2026-W53
    Moment("leap-day", _utc("2028-02-29T03:00:00"), SEOUL, dt.date(2028, 2, 29)),
    Moment("before-midnight-utc", _utc("2027-02-28T23:59:59"), "UTC", dt.date(2027, 2, 28)),
    Moment("midnight-utc", _utc("2027-03-01T00:00:00"), "UTC", dt.date(2027, 3, 1)),
    Moment("before-midnight-seoul", _utc("2026-12-13T14:59:59"), SEOUL, dt.date(2026, 12, 13)),  # Sunday
    Moment("midnight-seoul", _utc("2026-12-13T15:00:00"), SEOUL, dt.date(2026, 12, 14)),  # Monday 00:00
    # 2026-11-01 01:00-02:00 EDT happens twice in New York: this is the second 01:30 (EST)
    Moment("new-york-falls-back", _utc("2026-11-01T06:30:00"), NEW_YORK, dt.date(2026, 11, 1)),
    # 2027-03-14 02:00-03:00 does not happen in New York: 03:30 EDT
    Moment("new-york-springs-forward", _utc("2027-03-14T07:30:00"), NEW_YORK, dt.date(2027, 3, 14)),
]
AT = {m.label: m for m in SWEEP}


def sweep(*labels: str) -> pytest.MarkDecorator:
    """Parametrize a test's ``moment`` over the sweep (or the named moments of it)."""
    chosen = [AT[label] for label in labels] if labels else SWEEP
    return pytest.mark.parametrize("moment", chosen, ids=[m.label for m in chosen])


def history(moment: Moment, days: int, times: tuple[dt.time, ...]) -> list[dt.datetime]:
    """Each day of the ``days`` before ``moment`` (its own day included) at ``times`` local time, in
    UTC, oldest first, up to ``moment``. A local time the zone skips (a spring-forward hour) is taken
    with the offset before the change, as zoneinfo does; a repeated one is its first occurrence."""
    out = []
    for back in range(days, -1, -1):
        day = moment.local_day - dt.timedelta(days=back)
        for time in times:
            at = dt.datetime.combine(day, time, moment.tz).astimezone(dt.UTC)
            if at <= moment.at:
                out.append(at)
    return sorted(set(out))
