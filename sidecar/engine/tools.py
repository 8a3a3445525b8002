"""Running the stock MongoDB Database Tools (``mongodump``, ``mongorestore``) as child processes.

The URI, and so the password, goes into a 0600 ``--config`` file in a private temporary directory,
never onto the command line where ``ps`` would show it. Their stderr is collected (the last lines
explain a failure); a cancel or a timeout kills the process at once, whatever it is doing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import yaml

_KEEP_LINES = 200


def write_tool_config(directory: str, uri: str) -> str:
    path = os.path.join(directory, "mongotools.yaml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"uri": uri}, handle)
    return path


class ToolProcess:
    """A running tool: ``proc`` (binary stdin/stdout as asked), its stderr lines, why it was killed."""

    def __init__(self, proc: subprocess.Popen, cancel: threading.Event, timeout: float | None):
        self.proc, self.cancel = proc, cancel
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.lines: list[str] = []
        self.killed_for: str | None = None  # "cancel" or "timeout"
        self._threads = [
            threading.Thread(target=self._collect, name="tool-stderr", daemon=True),
            threading.Thread(target=self._watch, name="tool-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))
            del self.lines[:-_KEEP_LINES]

    def _watch(self) -> None:
        while self.proc.poll() is None:
            late = self.deadline is not None and time.monotonic() > self.deadline
            if self.cancel.is_set() or late:
                self.killed_for = "cancel" if self.cancel.is_set() else "timeout"
                self.proc.kill()
                return
            time.sleep(0.05)

    def wait(self) -> int:
        code = self.proc.wait()
        for thread in self._threads:
            thread.join()
        return code

    def tail(self, count: int = 20) -> list[str]:
        return [line.rstrip() for line in self.lines[-count:] if line.strip()]

    def last_line(self) -> str:
        tail = self.tail()
        return tail[-1] if tail else f"exit code {self.proc.returncode}"


@contextlib.contextmanager
def tool_process(
    tool: str,
    uri: str,
    args: list[str],
    *,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.DEVNULL,
    cancel: threading.Event | None = None,
    timeout: float | None = None,
) -> Iterator[ToolProcess]:
    """Start ``tool --config=FILE *args``; on leaving, a process still running is killed."""
    with tempfile.TemporaryDirectory(prefix="sidecar-tool-") as tmp:
        config = write_tool_config(tmp, uri)
        proc = subprocess.Popen(
            [tool, f"--config={config}", *args], stdin=stdin, stdout=stdout, stderr=subprocess.PIPE
        )
        run = ToolProcess(proc, cancel or threading.Event(), timeout)
        try:
            yield run
        finally:
            if proc.poll() is None:
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            run.wait()
