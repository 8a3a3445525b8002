"""The one clock. Every "what time is it" that decides something (retention and its tiers, the oplog
slices' windows, the dates in file names, ages, the daily log files) asks ``now()``, so that a test
decides the date it runs on with ``set_to``. Durations and deadlines keep ``time.monotonic()``: they
measure, they decide nothing about the calendar.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager

# While a test has set the clock: (the moment it set, the monotonic time then, whether it ticks).
_set: tuple[dt.datetime, float, bool] | None = None


def now() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    if _set is None:
        return dt.datetime.now(dt.UTC)
    moment, since, ticking = _set
    return moment + dt.timedelta(seconds=time.monotonic() - since) if ticking else moment


def timestamp() -> float:
    """``now()`` as seconds since the epoch."""
    return now().timestamp()


@contextmanager
def set_to(moment: dt.datetime, *, ticking: bool = False) -> Iterator[dt.datetime]:
    """For tests: ``now()`` answers ``moment`` until the block ends; with ``ticking``, moving on from
    it at the real pace (for work that waits for the time to change, like a backup's free name)."""
    global _set
    if moment.tzinfo is None:
        raise ValueError(f"the clock needs a timezone-aware time, not {moment.isoformat()}")
    previous, _set = _set, (moment.astimezone(dt.UTC), time.monotonic(), ticking)
    try:
        yield now()
    finally:
        _set = previous
