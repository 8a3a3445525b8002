"""Words for the numbers the sidecar prints: "1 document", "2 documents"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with thousands separators and ``noun`` in the number that agrees with it."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
