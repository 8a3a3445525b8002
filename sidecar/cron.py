"""Cron expressions with standard crontab semantics (0 and 7 = Sunday), as the runbook and Kubernetes
CronJobs read them, turned into APScheduler 3 triggers."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_days(field: str) -> str:
    """Standard cron day-of-week (0 or 7 = Sunday) as APScheduler 3 names (its 0 would be Monday)."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            lo, hi = 0, 6
        else:
            first, _, last = span.partition("-")
            lo = _DAY_NAMES.index(first) if first in _DAY_NAMES else int(first)
            hi = (_DAY_NAMES.index(last) if last in _DAY_NAMES else int(last)) if last else lo
            if step_text and not last:
                hi = 7 if lo else 6
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and step > 0):
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """APScheduler 3's ``from_crontab`` counts days of the week from Monday = 0, so ``0 4 * * 0`` would
    run on Mondays: the day-of-week field is translated to day names first."""
    minute, hour, day, month, day_of_week = expression.split()
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_days(day_of_week), timezone=timezone
    )
