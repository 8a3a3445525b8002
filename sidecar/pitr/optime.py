"""Oplog positions: a BSON ``Timestamp`` (``t`` seconds, ``i`` ordinal within the second).

In the catalogs a position is ``{"t": ..., "i": ...}``; in file names and messages ``t.i``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson.timestamp import Timestamp


def as_json(ts: Timestamp) -> dict[str, int]:
    return {"t": ts.time, "i": ts.inc}


def from_json(data: dict[str, Any]) -> Timestamp:
    return Timestamp(int(data["t"]), int(data["i"]))


def label(ts: Timestamp) -> str:
    return f"{ts.time}.{ts.inc}"


def iso(ts: Timestamp) -> str:
    """The position's second as ISO-8601 UTC (``t`` has one-second resolution)."""
    return dt.datetime.fromtimestamp(ts.time, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
