"""The alternative restore engine: the stock ``mongorestore --archive --gzip`` when it is installed.

Options map one to one onto mongorestore's (--nsInclude, --nsExclude, --nsFrom/--nsTo, --drop,
--dryRun, --oplogReplay). The URI, and so the password, goes into a 0600 ``--config`` file, never
onto the command line where ``ps`` would show it. The caller verifies the archive first and checks
the document counts afterwards, exactly as for the native engine.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sidecar.engine.mongodump import find_tool, write_tool_config
from sidecar.engine.restore_errors import RestoreCancelled, RestoreError
from sidecar.engine.restore_plan import RestoreOptions

_SUMMARY = re.compile(r"(\d+) document\(s\) restored successfully\. (\d+) document\(s\) failed to restore")

__all__ = ["MongorestoreResult", "find_tool", "mongorestore_arguments", "run_mongorestore"]


@dataclass
class MongorestoreResult:
    restored: int | None
    failed: int | None
    stderr_tail: list[str]

    def as_json(self) -> dict[str, object]:
        return {"restored": self.restored, "failed": self.failed, "log": self.stderr_tail}


def mongorestore_arguments(
    tool: str, config_path: str, archive: Path, options: RestoreOptions, *, oplog_replay: bool
) -> list[str]:
    args = [tool, f"--config={config_path}", f"--archive={archive}", "--gzip"]
    args += [f"--nsInclude={p}" for p in options.ns_include]
    args += [f"--nsExclude={p}" for p in options.ns_exclude]
    for source, target in zip(options.ns_from, options.ns_to, strict=True):
        args += [f"--nsFrom={source}", f"--nsTo={target}"]
    if options.drop:
        args.append("--drop")
    if options.dry_run:
        args.append("--dryRun")
    if oplog_replay:
        args.append("--oplogReplay")
    return args


def run_mongorestore(
    tool: str,
    uri: str,
    archive: Path,
    options: RestoreOptions,
    *,
    oplog_replay: bool,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> MongorestoreResult:
    """Run mongorestore on the gzip archive; RestoreError with its last line if it fails."""
    cancel = cancel or threading.Event()
    with tempfile.TemporaryDirectory(prefix="sidecar-tool-") as tmp:
        config = write_tool_config(tmp, uri)
        proc = subprocess.Popen(
            mongorestore_arguments(tool, config, archive, options, oplog_replay=oplog_replay),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=_collect, args=(proc, lines), daemon=True)
        reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while proc.poll() is None:
            if cancel.is_set() or (deadline is not None and time.monotonic() > deadline):
                proc.kill()
                proc.wait()
                reader.join()
                if cancel.is_set():
                    raise RestoreCancelled()
                raise RestoreError(f"mongorestore did not finish within {timeout}s")
            time.sleep(0.05)
        reader.join()
    tail = [line.rstrip() for line in lines[-20:] if line.strip()]
    summary = next((m for line in reversed(lines) if (m := _SUMMARY.search(line))), None)
    restored, failed = (int(summary.group(1)), int(summary.group(2))) if summary else (None, None)
    if proc.returncode != 0:
        last = tail[-1] if tail else f"exit code {proc.returncode}"
        raise RestoreError(f"mongorestore failed: {last}")
    return MongorestoreResult(restored, failed, tail)


def _collect(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        del lines[:-200]
