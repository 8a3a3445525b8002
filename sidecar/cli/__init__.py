"""``sidecar``: serve | backup | verify | restore | list | prune | pitr | oplog | demo.

Exit 0 on success; otherwise one line ``sidecar: error: <reason>`` on stderr and a non-zero code:
2 for bad usage or configuration, 1 for a failed job, 3 when another job holds the lock; ``pitr status``
exits 4 when MongoDB cannot be reached (after printing what the archive says).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sidecar.cli import backup, demo, listing, oplog, pitr, prune, restore, serve, verify
from sidecar.cli.common import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, fail
from sidecar.config import ConfigError, Settings, load_settings
from sidecar.jobs import JobBusy
from sidecar.service import JobFailed
from sidecar.store.catalog import CatalogError

# one module per command, each with its add_parser(sub); in the order of ``sidecar --help``
COMMANDS = (backup, listing, prune, verify, restore, serve, pitr, oplog, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="mongo-backup-sidecar: back up MongoDB, test and restore the backups, serve the API.",
        epilog="Exit codes: 0 success; 1 a failed job; 2 bad usage or configuration; 3 another job holds "
        "the lock. 'sidecar COMMAND --help' describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        if not getattr(args, "logs_to_terminal", False):
            _log_to_files_only(settings)
        return args.func(args, settings)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except JobBusy as exc:
        return fail(str(exc), EXIT_BUSY)
    except (JobFailed, CatalogError) as exc:
        return fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as exc:  # one line for the operator, never a traceback
        return fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED)


def _log_to_files_only(settings: Settings) -> None:
    """One-shot commands keep the terminal to their summary or their one error line; the job records
    go to the daily files the runbook greps (logs/combined-*.log, logs/error-*.log)."""
    from sidecar.logs import setup_logging

    try:
        setup_logging(settings, console=False)
    except OSError:  # an unwritable log directory must not stop a backup
        setup_logging(settings, console=False, files=False)
