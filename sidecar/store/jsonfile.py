"""A JSON document in a file, shared by processes: read, or changed under an exclusive file lock and
written atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves the previous
document intact. ``backup-info.json`` and the oplog slice catalog are both kept this way.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sidecar.store.filelock import FileLock


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LockedJsonFile:
    """``path`` holds one JSON document; ``error`` is the exception type its read failures raise."""

    def __init__(self, path: Path, error: type[Exception] = ValueError):
        self.path = Path(path)
        self.error = error
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with FileLock(self.lock_path):
            yield

    def read(self, default: Any) -> Any:
        """The document, or ``default`` when the file is absent or empty."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise self.error(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            return json.loads(text) if text.strip() else default
        except ValueError as exc:
            raise self.error(f"{self.path} is not valid JSON ({exc}); fix or move it aside") from None

    def write(self, document: Any) -> None:
        """Atomically replace the document (call it holding ``locked()`` when others may write)."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
