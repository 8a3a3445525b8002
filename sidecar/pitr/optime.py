"""Oplog positions: a BSON ``Timestamp`` (``t`` seconds, ``i`` ordinal within the second).

In the catalogs a position is ``{"t": ..., "i": ...}``; in file names and messages ``t.i``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from bson.timestamp import Timestamp


def as_json(ts: Timestamp) -> dict[str, int]:
    return {"t": ts.time, "i": ts.inc}


def from_json(data: dict[str, Any]) -> Timestamp:
    return Timestamp(int(data["t"]), int(data["i"]))


def label(ts: Timestamp) -> str:
    return f"{ts.time}.{ts.inc}"


def parse(text: str) -> Timestamp:
    """``t.i`` or ``t:i``."""
    match = re.fullmatch(r"(\d+)[.:](\d+)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an oplog position like 1733011200:5")
    return Timestamp(int(match[1]), int(match[2]))


def iso(ts: Timestamp) -> str:
    """The position's second as ISO-8601 UTC (``t`` has one-second resolution)."""
    return dt.datetime.fromtimestamp(ts.time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Point = Timestamp | dt.datetime  # an oplog position, or a moment (aware datetime)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})")


def parse_point(text: str) -> Point:
    """``t:i`` (or ``t.i``): an oplog position; or an ISO-8601 time with its zone
    (``2024-12-01T14:31:07+09:00``, ``2024-12-01T05:31:07.120Z``): a moment."""
    raw = re.sub(r"(:\d{2}(\.\d+)?) (\d{2}:?\d{2})$", r"\1+\3", text.strip())  # '+' read from a URL as ' '
    if re.fullmatch(r"\d{1,10}[.:]\d{1,10}", raw):
        try:
            return parse(raw)
        except ValueError:
            raise ValueError(f"{raw!r}: t and i must each be below 2^32") from None
    if _ISO.fullmatch(raw):
        try:
            return dt.datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
        except ValueError:
            pass
    elif _ISO.fullmatch(raw + "Z"):
        raise ValueError(f"{raw!r} has no time zone: add Z (UTC) or an offset like +09:00")
    raise ValueError(
        f"{text[:60]!r} is neither an oplog position like 1733011200:5 nor an ISO-8601 time with a zone "
        "like 2024-12-01T14:31:07+09:00 or 2024-12-01T05:31:07Z"
    )
