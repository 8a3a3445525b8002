"""The one file lock: an exclusive ``flock`` on a file, shared by every process and thread that opens
it (each ``FileLock`` opens the file anew, so two in one process conflict like two processes do).
The holder may write a description into the file for a refused caller to read.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class FileLock:
    """An exclusive lock on ``path`` (created when absent): ``with FileLock(p):`` waits for it,
    ``acquire(wait=False)`` only tries."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle: IO[str] | None = None

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock; False when ``wait`` is off and another holder has it."""
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for as long as the lock is held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return True

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def record(self, text: str) -> None:
        """Replace what the file says about its holder (the lock must be held)."""
        if self._handle is None:
            raise RuntimeError(f"{self.path} is not locked by this holder")
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text)
        self._handle.flush()

    def holder(self) -> str:
        """What the current holder recorded ('' when nothing)."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Someone (this process included) holds the lock on ``path``; False when the file is absent."""
    if not Path(path).exists():
        return False
    lock = FileLock(path)
    if not lock.acquire(wait=False):
        return True
    lock.release()
    return False
