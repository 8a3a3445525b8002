"""What every command shares: its exit codes, its one error line, the type of ``--tz``."""

from __future__ import annotations

import argparse
import sys

from sidecar.time_input import TimeInputError, zone_name

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 1, 2, 3


def fail(message: str, code: int) -> int:
    """``sidecar: error: <message>`` on stderr; ``code``, the exit status."""
    print(f"sidecar: error: {message}", file=sys.stderr)
    return code


def time_zone(name: str) -> str:
    """``--tz``: an IANA zone name (argparse prints the reason when it is not one)."""
    try:
        return zone_name(name)
    except TimeInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
