"""The restore's error types, and the helpers that turn driver errors into short messages.

Shared by the planning, the oplog replay and the restore itself.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

MAX_ERROR_SAMPLES = 20


class RestoreError(RuntimeError):
    """A restore cannot go on; ``stage`` is connect, verify or restore."""

    def __init__(self, message: str, stage: str = "restore"):
        super().__init__(message)
        self.stage = stage


class RestoreCancelled(RestoreError):
    def __init__(self) -> None:
        super().__init__("restore was cancelled", "restore")


def shorten(text: Any, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, for error samples."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(exc: BaseException, limit: int = 200) -> str:
    """A driver error in one short line: without pymongo's timeout settings and topology dump."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for cut in (" (configured timeouts", ", Timeout: ", ", full error: "):
        text = text.split(cut, 1)[0]
    return shorten(text, limit)


def server_message(exc: OperationFailure) -> str:
    """The server's own errmsg of a refused operation, shortened."""
    return shorten((exc.details or {}).get("errmsg") or exc)
