"""The one clock (sidecar/clock.py): set, nested, ticking, restored."""

from __future__ import annotations

import datetime as dt

import pytest

from sidecar import clock

A = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
B = dt.datetime(2028, 2, 29, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=9)))


def test_set_frozen_nested_and_restored() -> None:
    with clock.set_to(A) as now:
        assert now == clock.now() == A and clock.timestamp() == A.timestamp()
        with clock.set_to(B):
            assert clock.now() == B and clock.now().tzinfo == dt.UTC  # answered in UTC
        assert clock.now() == A
    with clock.set_to(B):
        assert clock.now() == B  # nothing of A left


def test_ticking_moves_on_from_the_moment() -> None:
    with clock.set_to(A, ticking=True) as start:
        later = clock.now()
        assert A <= start <= later < A + dt.timedelta(seconds=60)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"), clock.set_to(dt.datetime(2026, 12, 7)):
        pass
