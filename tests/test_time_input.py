"""The one parser of typed times (sidecar/time_input.py): each accepted form, each refusal, and the
examples of docs/pitr.md's "Times you can type" (EN) and "입력할 수 있는 시각" (KO) as written."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from bson.timestamp import Timestamp

from sidecar import clock
from sidecar.time_input import TimeInputError, parse_iso, parse_moment, parse_point, parse_position

NOW = dt.datetime(2026, 12, 8, 3, 0, 0, tzinfo=dt.UTC)
AT = dt.datetime(2024, 12, 1, 5, 31, 7, tzinfo=dt.UTC)  # 14:31:07 in Asia/Seoul
DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(autouse=True)
def fixed_clock():
    with clock.set_to(NOW):
        yield


ACCEPTED = [
    # relative to now (the clock)
    ("now", NOW),
    ("NOW", NOW),
    ("now-5m", NOW - dt.timedelta(minutes=5)),
    ("now - 1h30m", NOW - dt.timedelta(hours=1, minutes=30)),
    ("-90s", NOW - dt.timedelta(seconds=90)),
    ("2h ago", NOW - dt.timedelta(hours=2)),
    ("1d12h ago", NOW - dt.timedelta(days=1, hours=12)),
    # epoch seconds
    ("@1733031067", AT),
    ("@1733031067.25", AT + dt.timedelta(milliseconds=250)),
    ("@1733031067.123456", AT.replace(microsecond=123456)),  # exactly: not through a float
    ("1733031067", AT),
    ("@0", dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
    # ISO-8601: zones, separators, cases, the basic form, fractions
    ("2024-12-01T14:31:07+09:00", AT),
    ("2024-12-01T05:31:07Z", AT),
    ("2024-12-01t05:31:07z", AT),
    ("2024-12-01 14:31:07+0900", AT),
    ("2024-12-01T14:31:07+09", AT),
    ("2024-11-30T21:31:07-08:00", AT),
    ("20241201T053107Z", AT),
    ("20241201T143107+0900", AT),
    ("2024-12-01T14:31+09:00", AT.replace(second=0)),
    ("2024-12-01T05:31:07.120Z", AT.replace(microsecond=120000)),
    ("2024-12-01T05:31:07,5Z", AT.replace(microsecond=500000)),
    ("2024-12-01T05:31:07.123456789Z", AT.replace(microsecond=123456)),
    ("2024-12-01T14:31:07 09:00", AT),  # '+' of a URL query read as a space
    ("  2024-12-01T05:31:07Z  ", AT),
]


@pytest.mark.parametrize(("text", "moment"), ACCEPTED)
def test_each_accepted_form(text: str, moment: dt.datetime) -> None:
    parsed = parse_moment(text)
    assert parsed == moment and parsed.utcoffset() == dt.timedelta(0)


def test_the_last_second_an_oplog_position_holds() -> None:
    last = dt.datetime.fromtimestamp(2**32 - 1, dt.UTC)
    with clock.set_to(last):
        assert parse_moment("2106-02-07T06:28:15Z") == last == parse_moment("now")


@pytest.mark.parametrize(
    ("text", "zone", "moment"),
    [
        ("2024-12-01T14:31:07", "Asia/Seoul", AT),
        ("2024-12-01 14:31", "Asia/Seoul", AT.replace(second=0)),
        ("20241201T143107", "Asia/Seoul", AT),
        ("2024-12-01T00:31:07", "America/New_York", AT),
        ("2024-07-01T01:31:07", "America/New_York", dt.datetime(2024, 7, 1, 5, 31, 7, tzinfo=dt.UTC)),  # EDT
        ("2024-12-01T14:31:07+09:00", "America/New_York", AT),  # a zone given wins over tz
    ],
)
def test_a_local_time_is_read_in_the_zone_given(text: str, zone: str, moment: dt.datetime) -> None:
    assert parse_moment(text, zone) == moment


def test_positions_where_the_flag_takes_one() -> None:
    assert parse_point("1733011200:5") == Timestamp(1733011200, 5)
    assert parse_point("1733011200.5") == Timestamp(1733011200, 5)
    assert parse_point("118:0") == Timestamp(118, 0)
    assert parse_point("now-5m") == NOW - dt.timedelta(minutes=5)
    assert parse_position(" 4294967295:4294967295 ") == Timestamp(2**32 - 1, 2**32 - 1)


REFUSED = [
    ("", "is not a time"),
    ("yesterday", "is not a time like 2024-12-01T14:31:07+09:00 (ISO-8601), now-5m or @1733011200"),
    ("1h30m", "is a duration, not a time: write 1h30m ago or now-1h30m"),
    ("now+5m", "is in the future"),
    ("in 5m", "is in the future"),
    ("2027-01-01T00:00:00Z", "is in the future (now is 2026-12-08T03:00:00Z)"),
    ("@1797000000", "is in the future"),
    ("2024-12-01", "is a date without a time of day"),
    ("20241201", "is a date without a time of day"),
    ("2024-12-01T14+09:00", "names only an hour: write its minutes too, like 14:00"),
    ("2024-12-01t14z", "names only an hour"),
    ("2024-12-01T14:31:07", "has no time zone: add Z (UTC) or an offset like +09:00"),
    ("2200-01-01T00:00:00Z", "is outside the times an oplog position can hold (1970-01-01T00:00:00Z to 2106"),
    ("1969-12-31T23:59:59Z", "is outside the times an oplog position can hold"),
    ("0001-01-01T00:00:00+01:00", "is outside the times an oplog position can hold"),
    ("9999-12-31T23:59:59-01:00", "is outside the times an oplog position can hold"),
    ("@-1", "is outside the times an oplog position can hold"),
    ("@4294967296", "is outside the times an oplog position can hold"),
    ("99999999999", "is outside the times an oplog position can hold"),
    ("now-30000d", "is outside the times an oplog position can hold"),
    ("2024-02-30T00:00:00Z", "is not a date and time of the calendar (day is out of range for month)"),
    ("2024-12-01T24:00:00Z", "is not a date and time of the calendar"),
    ("2024-12-01T10:00+24:00", "+24:00 is not a zone offset"),
    ("5m1h ago", "write each unit once, largest first, like 1h30m"),
    ("1h1h ago", "write each unit once"),
    ("1733011200:5", "is an oplog position; a time is wanted here"),
]


@pytest.mark.parametrize(("text", "said"), REFUSED)
def test_each_refusal_says_what_is_wrong_with_the_input(text: str, said: str) -> None:
    with pytest.raises(TimeInputError) as refused:
        parse_moment(text)
    assert said in str(refused.value) and repr(text.strip()[:60]) in str(refused.value)
    assert "2**32" not in str(refused.value) and "contained in" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "zone", "said"),
    [
        ("2024-03-10T02:30:00", "America/New_York", "does not exist in America/New_York"),
        ("2024-11-03T01:30:00", "America/New_York", "happens twice in America/New_York"),
        ("2024-12-01T14:31:07", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_local_time_the_clocks_skip_or_repeat_is_refused(text: str, zone: str, said: str) -> None:
    with pytest.raises(TimeInputError, match=re.escape(said)):
        parse_moment(text, zone)


def test_positions_are_refused_with_their_own_message() -> None:
    for text, said in (
        ("99999999999:1", "t and i of an oplog position must each be below 2^32"),
        ("1:4294967296", "must each be below 2^32"),
        ("2024-12-01T14:31:07Z", "is not an oplog position like 1733011200:5"),
        ("now", "is not an oplog position"),
    ):
        with pytest.raises(TimeInputError, match=re.escape(said)):
            parse_position(text)
    with pytest.raises(TimeInputError, match="is neither an oplog position like 1733011200:5 nor a time"):
        parse_point("yesterday")
    with pytest.raises(TimeInputError, match="is in the future"):
        parse_point("now+1m")


@pytest.mark.parametrize("parse", [parse_moment, parse_position, parse_point])
def test_an_input_longer_than_any_time_is_refused_by_its_length(parse) -> None:
    """The API's schema allows 64 characters; 65 zeros would otherwise be epoch 0."""
    with pytest.raises(TimeInputError, match="is 65 characters long; a time has at most 64"):
        parse("0" * 65)
    assert parse_moment(" " + "0" * 63 + "1 ") == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)


def test_stored_times_are_read_without_the_clock_or_a_zone_setting() -> None:
    assert parse_iso("2024-12-01T05:31:07.120Z") == AT.replace(microsecond=120000)
    assert parse_iso("2030-01-01T00:00:00+00:00") == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # future: stored
    with pytest.raises(ValueError, match="no time zone"):
        parse_iso("2024-12-01T05:31:07")


def _documented(path: Path, heading: str) -> list[tuple[str, str]]:
    """The section's example table: (what is typed, what it means in UTC or "refused: ...")."""
    text = path.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]*)` \| `([^`]*)` \|", section, re.M)
    assert len(rows) >= 12, f"{path.name}: the example table of {heading!r} is missing"
    return rows


@pytest.mark.parametrize(
    ("doc", "heading"), [("pitr.md", "Times you can type"), ("pitr-restore.ko.md", "입력할 수 있는 시각")]
)
def test_the_documented_examples_read_as_documented(doc: str, heading: str) -> None:
    """The docs' examples are read with the clock at 2026-12-08T03:00:00Z and --tz Asia/Seoul."""
    for typed, meaning in _documented(DOCS / doc, heading):
        if meaning.startswith("refused: "):
            with pytest.raises(TimeInputError) as refused:
                parse_point(typed, "Asia/Seoul")
            assert meaning.removeprefix("refused: ") in str(refused.value), typed
            continue
        point = parse_point(typed, "Asia/Seoul")
        shown = f"{point.time}:{point.inc}" if isinstance(point, Timestamp) else f"{point:%Y-%m-%dT%H:%M:%S}Z"
        assert shown == meaning, typed
