"""The one parser of times: every time a person types (the CLI's flags, the API's fields and query
parameters, ``oplog find``) and every time the catalogs store. docs/pitr.md, "Times you can type".

A *moment* (an aware datetime in UTC) is written as

- ``now``, ``now-5m``, ``now - 1h30m``, ``-90s``, ``2h ago``, ``1d12h ago``: now (``clock.now()``)
  less a duration of whole days, hours, minutes and seconds (``d``, ``h``, ``m``, ``s``, largest first);
- epoch seconds: ``@1733011200`` (``@1733011200.5``), or a bare number of at least 9 digits;
- ISO-8601: ``2024-12-01T14:31:07+09:00``; the date ``2024-12-01`` or ``20241201``; the time
  ``14:31``, ``14:31:07``, ``14:31:07.120`` or ``143107``; between them ``T``, ``t`` or a space; the
  zone ``Z``/``z``, ``+09:00``, ``+0900`` or ``+09`` (a space before the offset is a ``+``: a URL
  query turns an unencoded ``+`` into a space). Without a zone it is a local time in the zone the
  caller gives (the CLI's ``--tz``, else ``SIDECAR_TIMEZONE``); a local time the clocks skip or show
  twice is refused.

An oplog *position* is ``t:i`` (or ``t.i``), where the flag takes one. Refused, each with a message
about the input: a date or an hour alone, a time in the future, one outside what an oplog position
can hold (1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z). The callers name the flag or field.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from bson.timestamp import Timestamp

from sidecar import clock

Point = Timestamp | dt.datetime  # an oplog position, or a moment

FIRST = dt.datetime.fromtimestamp(0, dt.UTC)
LAST = dt.datetime.fromtimestamp(2**32 - 1, dt.UTC)  # the last second a Timestamp's t can hold
MAX_LENGTH = 64  # the API's schema says so too (openapi.yaml); no time is written longer
EXAMPLES = "like 2024-12-01T14:31:07+09:00 (ISO-8601), now-5m or @1733011200"

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = r"(?:\d+[dhms])+"
_RELATIVE = re.compile(rf"now(?:\s*-\s*(?P<a>{_DURATION}))?|-(?P<b>{_DURATION})|(?P<c>{_DURATION})\s+ago")
_AHEAD = re.compile(rf"now\s*\+\s*{_DURATION}|\+{_DURATION}|in\s+{_DURATION}")
_EPOCH = re.compile(r"@(?P<n>-?\d+)(?:\.(?P<f>\d+))?|(?P<bare>\d{9,})")
_POSITION = re.compile(r"(\d+)[.:](\d+)")
_DATE = r"(?P<y>\d{4})(?P<dash>-?)(?P<mo>\d{2})(?P=dash)(?P<d>\d{2})"
_TIME = r"(?P<h>\d{2})(?::?(?P<mi>\d{2})(?::?(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
_ZONE = r"(?P<z>[Zz]|[+ -]\d{2}(?::?\d{2})?)?"
_ISO = re.compile(rf"{_DATE}(?:[Tt ]{_TIME})?{_ZONE}")


class TimeInputError(ValueError):
    """A time that cannot be used, and why; the caller puts the flag or field in front."""


def parse_moment(text: str, tz: str | None = None) -> dt.datetime:
    """A moment (module doc); ``tz`` reads a time without a zone (None: such a time is refused)."""
    text = _bounded(text)
    moment = _moment(text, tz)
    if moment is None:
        if _POSITION.fullmatch(text.strip()):
            raise TimeInputError(f"{_shown(text)} is an oplog position; a time is wanted here, {EXAMPLES}")
        raise TimeInputError(f"{_shown(text)} is not a time {EXAMPLES}")
    return moment


def parse_position(text: str) -> Timestamp:
    """``t:i`` or ``t.i``: the oplog entry's ``ts``."""
    match = _POSITION.fullmatch(_bounded(text))
    if not match:
        raise TimeInputError(f"{_shown(text)} is not an oplog position like 1733011200:5")
    t, i = int(match[1]), int(match[2])
    if t >= 2**32 or i >= 2**32:
        raise TimeInputError(f"{_shown(text)}: t and i of an oplog position must each be below 2^32")
    return Timestamp(t, i)


def parse_point(text: str, tz: str | None = None) -> Point:
    """An oplog position (``t:i``) or a moment."""
    text = _bounded(text)
    if _POSITION.fullmatch(text):
        return parse_position(text)
    moment = _moment(text, tz)
    if moment is None:
        raise TimeInputError(
            f"{_shown(text)} is neither an oplog position like 1733011200:5 nor a time {EXAMPLES}"
        )
    return moment


def parse_iso(text: str) -> dt.datetime:
    """A stored ISO-8601 time with its zone (the catalogs' ``createdAt``, a slice's ``firstWall``)."""
    moment = _iso(text, None)
    if moment is None:
        raise ValueError(f"{text[:60]!r} is not an ISO-8601 time")
    return moment


def _bounded(text: str) -> str:
    """``text`` without surrounding blanks, refused when longer than any time is written."""
    raw = text.strip()
    if len(raw) > MAX_LENGTH:
        raise TimeInputError(
            f"{_shown(raw)}... is {len(raw)} characters long; a time has at most {MAX_LENGTH}"
        )
    return raw


def _shown(text: str) -> str:
    return repr(text[:60])


def _moment(text: str, tz: str | None) -> dt.datetime | None:
    """The moment ``text`` writes, checked; None when it is written in none of the forms."""
    raw = text.strip()
    if re.fullmatch(_DURATION, raw.lower()):
        raise TimeInputError(f"{_shown(raw)} is a duration, not a time: write {raw} ago or now-{raw}")
    moment = _relative(raw) or _epoch(raw) or _iso(raw, tz)
    return _checked(moment, raw) if moment is not None else None


def _relative(raw: str) -> dt.datetime | None:
    if _AHEAD.fullmatch(raw.lower()):
        raise TimeInputError(f"{_shown(raw)} is in the future: a time to look back to is wanted, like now-5m")
    match = _RELATIVE.fullmatch(raw.lower())
    if not match:
        return None
    units = re.findall(r"(\d+)([dhms])", match["a"] or match["b"] or match["c"] or "")
    order = [list(_UNITS).index(u) for _, u in units]
    if order != sorted(set(order)):
        raise TimeInputError(f"{_shown(raw)}: write each unit once, largest first, like 1h30m")
    seconds, now = sum(int(n) * _UNITS[u] for n, u in units), clock.now()
    if seconds > (now - FIRST).total_seconds():
        raise TimeInputError(f"{_shown(raw)} is outside {_range()}")
    return now - dt.timedelta(seconds=seconds)


def _epoch(raw: str) -> dt.datetime | None:
    match = _EPOCH.fullmatch(raw)
    if not match:
        return None
    seconds = int(match["n"] or match["bare"])
    if not 0 <= seconds < 2**32:
        raise TimeInputError(f"{_shown(raw)} is outside {_range()} (epoch seconds 0 to {2**32 - 1})")
    return FIRST + dt.timedelta(seconds=seconds, microseconds=_microseconds(match["f"]))


def _iso(raw: str, tz: str | None) -> dt.datetime | None:
    match = _ISO.fullmatch(raw)
    if not match:
        return None
    if match["h"] is None:
        raise TimeInputError(f"{_shown(raw)} is a date without a time of day: add one, like {raw[:10]}T00:00")
    if match["mi"] is None:
        raise TimeInputError(f"{_shown(raw)} names only an hour: write its minutes too, like {match['h']}:00")
    try:
        local = dt.datetime(
            int(match["y"]),
            int(match["mo"]),
            int(match["d"]),
            int(match["h"]),
            int(match["mi"]),
            int(match["s"] or 0),
            _microseconds(match["f"]),
        )
    except ValueError as exc:
        raise TimeInputError(f"{_shown(raw)} is not a date and time of the calendar ({exc})") from None
    if match["z"] is not None:
        try:
            return local.replace(tzinfo=_offset(raw, match["z"])).astimezone(dt.UTC)
        except OverflowError:
            raise TimeInputError(f"{_shown(raw)} is outside {_range()}") from None
    if tz is None:
        raise TimeInputError(
            f"{_shown(raw)} has no time zone: add Z (UTC) or an offset like +09:00, so it is not ambiguous"
        )
    return _local(raw, local, zone(tz))


def _microseconds(fraction: str | None) -> int:
    """The digits after a second's decimal point as microseconds (beyond six: cut, as stored)."""
    return int((fraction or "0")[:6].ljust(6, "0"))


def zone_name(name: str) -> str:
    """``name`` when it is an IANA time zone (the type of ``--tz`` and SIDECAR_TIMEZONE)."""
    zone(name)
    return name


def zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone by name (``Asia/Seoul``); TimeInputError when there is none."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise TimeInputError(f"unknown time zone {name[:60]!r} (use an IANA name like Asia/Seoul)") from None


def _offset(raw: str, written: str) -> dt.timezone:
    if written in "Zz":
        return dt.UTC
    digits = written[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise TimeInputError(
            f"{_shown(raw)}: {written} is not a zone offset (hours up to 23, minutes up to 59)"
        )
    sign = -1 if written[0] == "-" else 1
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _local(raw: str, local: dt.datetime, where: zoneinfo.ZoneInfo) -> dt.datetime:
    """``local`` read in ``where``; refused where the clocks jump over it or show it twice."""
    first, second = (local.replace(tzinfo=where, fold=f).astimezone(dt.UTC) for f in (0, 1))
    if first.astimezone(where).replace(tzinfo=None) != local:
        raise TimeInputError(
            f"{_shown(raw)} does not exist in {where.key} (its clocks jump over it): "
            "give the time with its UTC offset"
        )
    if first != second:
        offsets = " or ".join(local.replace(tzinfo=where, fold=f).strftime("%z") for f in (0, 1))
        raise TimeInputError(
            f"{_shown(raw)} happens twice in {where.key} (its clocks go back): add the offset ({offsets})"
        )
    return first


def _checked(moment: dt.datetime, raw: str) -> dt.datetime:
    if not FIRST <= moment <= LAST:
        raise TimeInputError(f"{_shown(raw)} is outside {_range()}")
    now = clock.now()
    if moment > now:
        raise TimeInputError(f"{_shown(raw)} is in the future (now is {now:%Y-%m-%dT%H:%M:%SZ})")
    return moment


def _range() -> str:
    return f"the times an oplog position can hold ({FIRST:%Y-%m-%dT%H:%M:%SZ} to {LAST:%Y-%m-%dT%H:%M:%SZ})"
