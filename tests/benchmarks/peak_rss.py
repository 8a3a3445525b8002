"""The peak RSS of a command on its own, for benchmarks that run the sidecar as an operator does.

    python tests/benchmarks/peak_rss.py OUT COMMAND [ARGS...]

Runs COMMAND, writes its peak RSS in bytes to the file OUT and exits with its exit code (its stdin,
stdout and stderr are this process's).

Why a launcher: on Linux a child's ``ru_maxrss`` (``wait4``, ``getrusage``) starts at the peak RSS of
the process that forked it (exec carries the old address space's high-water mark into the child's
count), so a command started by a benchmark that grew large (an archiver tailing a million writes)
reports at least the benchmark's own peak. Started from this small process, it reports its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out, command = Path(argv[0]), argv[1:]
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    out.write_text(f"{usage.ru_maxrss * 1024}\n", encoding="utf-8")  # Linux: KiB
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
