"""The alternative restore engine: the stock ``mongorestore --archive`` when it is installed.

Options map one to one onto mongorestore's (--nsInclude, --nsExclude, --nsFrom/--nsTo, --drop,
--dryRun, --oplogReplay). The caller verifies the archive first and hands over the uncompressed
archive stream of the verified (pinned) source, which is fed to mongorestore's stdin: the tool
restores the bytes that were verified, decrypted by us when the archive is age-encrypted. The caller
checks the document counts afterwards, exactly as for the native engine. A cancel kills the tool.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import BinaryIO

from sidecar.engine.restore_errors import RestoreCancelled, RestoreError
from sidecar.engine.restore_plan import RestoreOptions
from sidecar.engine.tools import tool_process

_SUMMARY = re.compile(r"(\d+) document\(s\) restored successfully\. (\d+) document\(s\) failed to restore")


@dataclass
class MongorestoreResult:
    restored: int | None
    failed: int | None
    stderr_tail: list[str]

    def as_json(self) -> dict[str, object]:
        return {"restored": self.restored, "failed": self.failed, "log": self.stderr_tail}


def mongorestore_arguments(options: RestoreOptions, *, oplog_replay: bool) -> list[str]:
    """After ``--config``: the uncompressed archive on stdin, and the options."""
    args = ["--archive"]
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
    archive: BinaryIO,
    options: RestoreOptions,
    *,
    oplog_replay: bool,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> MongorestoreResult:
    """Run mongorestore on ``archive``, the uncompressed archive stream fed to its stdin; RestoreError
    with its last line if it fails."""
    args = mongorestore_arguments(options, oplog_replay=oplog_replay)
    with tool_process(tool, uri, args, stdin=subprocess.PIPE, cancel=cancel, timeout=timeout) as run:
        _feed(archive, run.proc.stdin)  # type: ignore[arg-type]
        code = run.wait()
    if run.killed_for == "cancel":
        raise RestoreCancelled()
    if run.killed_for == "timeout":
        raise RestoreError(f"mongorestore did not finish within {timeout}s")
    summary = next((m for line in reversed(run.lines) if (m := _SUMMARY.search(line))), None)
    restored, failed = (int(summary.group(1)), int(summary.group(2))) if summary else (None, None)
    if code != 0:
        raise RestoreError(f"mongorestore failed: {run.last_line()}")
    return MongorestoreResult(restored, failed, run.tail())


def _feed(archive: BinaryIO, stdin: BinaryIO) -> None:
    """The archive into the tool's stdin; a tool that stops reading (it failed) ends the feed."""
    with contextlib.suppress(BrokenPipeError):
        shutil.copyfileobj(archive, stdin, 1 << 20)
    with contextlib.suppress(BrokenPipeError):
        stdin.close()
