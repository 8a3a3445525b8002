"""The CLI progress line: drawn on a terminal, silent otherwise."""

from __future__ import annotations

import io
import time

from sidecar.jobs import Job
from sidecar.progress import TerminalProgress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_shows_namespaces_documents_and_bytes():
    job = Job(kind="backup", trigger="manual")
    screen = FakeTerminal()
    with TerminalProgress(job.progress, stream=screen, interval=0.01):
        p = job.progress
        p.namespaces_total, p.namespaces_done, p.documents, p.bytes = 4, 2, 12345, 5_500_000
        time.sleep(0.05)
    last = screen.getvalue().split("\r")[-1]
    assert last == "[############............] 2/4 namespaces  12,345 documents  5.5 MB\n"


def test_progress_is_silent_when_not_a_terminal():
    job = Job(kind="backup", trigger="manual")
    pipe = io.StringIO()
    with TerminalProgress(job.progress, stream=pipe, interval=0.01):
        job.progress.namespaces_total = job.progress.namespaces_done = 1
        time.sleep(0.03)
    assert pipe.getvalue() == ""
