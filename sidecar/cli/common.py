"""What every command shares: its exit codes and its one error line."""

from __future__ import annotations

import sys

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 1, 2, 3


def fail(message: str, code: int) -> int:
    """``sidecar: error: <message>`` on stderr; ``code``, the exit status."""
    print(f"sidecar: error: {message}", file=sys.stderr)
    return code
