"""The sidecar's words for numbers and times: counts ("2 documents"), sizes ("15.2MB") and
ISO-8601 UTC times, as the catalog, the logs, the API and the command line write them. Reading a time
back is ``sidecar/time_input.py``'s (the one parser)."""

from __future__ import annotations

import datetime as dt


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with thousands separators and ``noun`` in the number that agrees with it."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def human_size(size: int) -> str:
    """The runbook's ``fileSize`` style: ``15.2MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GB"


def iso_utc(moment: dt.datetime) -> str:
    """``2024-12-01T02:00:00.000Z``: ISO-8601 UTC with milliseconds, as the runbook shows."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
