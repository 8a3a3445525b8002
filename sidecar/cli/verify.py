"""``sidecar verify``: an archive's integrity test (quick, full, drill) or the oplog archive's (pitr)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sidecar.config import ConfigError, Settings
from sidecar.integrity.failure import LEVELS
from sidecar.progress import TerminalProgress
from sidecar.service import BackupService
from sidecar.text import counted, human_size


def add_parser(sub: Any) -> None:
    verify = sub.add_parser(
        "verify",
        help="integrity test of a backup: quick, full or a restore drill; or pitr, of the oplog archive",
    )
    verify.add_argument("file", nargs="?", help="a catalog file name or a path (default: the newest backup)")
    verify.add_argument("--latest", action="store_true", help="the newest usable backup (the default)")
    verify.add_argument(
        "--level",
        choices=LEVELS,
        default="full",
        help="quick: size, sha256, gzip; full: every document and CRC against the manifest (default); "
        "drill: full, then a restore into a scratch database compared with the archive; "
        "pitr (no FILE): the newest two base backups the oplog archive joins restored into scratch "
        "databases, the older one carried to the newer's point by the archived oplog, then compared",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    if args.level == "pitr":
        return cmd_verify_pitr(args, settings)
    service = BackupService(settings)
    job = service.new_job("verify", fileName=args.file or "--latest", level=args.level)
    with TerminalProgress(job.progress, enabled=not (args.quiet or args.json)):
        result = service.run_verify(job, file_name=args.file, latest=args.latest, level=args.level)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    record = result["verification"][args.level]
    if args.level == "quick":
        detail = f"{record.get('sizeBytes', 0):,} bytes, sha256 {str(record.get('sha256', ''))[:16]}…"
    else:
        full = result["verification"]["full"]
        detail = (
            f"{counted(full.get('documents', 0), 'document')} in "
            f"{counted(full.get('namespaces', 0), 'namespace')}, "
            f"{full.get('uncompressedBytes', 0) / 1e6:,.1f} MB at {full.get('throughputMBps', 0)} MB/s"
        )
        if args.level == "drill":
            detail += (
                f"; restored into {', '.join(record.get('scratchDatabases', []))}{_on_server(record)} "
                f"and compared"
            )
    print(f"{args.level} verification passed: {result['fileName']} ({detail}, {record['durationSeconds']}s)")
    return 0


def cmd_verify_pitr(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when the replay reproduces the newer base, or when there is no pair to check (skipped,
    said on stdout); 1 when it does not (the error names the slices)."""
    if args.file or args.latest:
        raise ConfigError("--level pitr checks the newest two base backups the oplog archive joins: no FILE")
    service = BackupService(settings)
    job = service.new_job("verify", level="pitr")
    with TerminalProgress(job.progress, enabled=not (args.quiet or args.json)):
        result = service.run_pitr_verify(job)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif result.get("skipped"):
        print(f"pitr verification skipped: {result['skipped']}")
    else:
        record = result["verification"]["pitr"]
        pair = record["pair"]
        print(
            f"pitr verification passed: {pair['older']} + {counted(len(pair['slices']), 'slice')} "
            f"({counted(record['replay']['entries'], 'oplog entry', 'oplog entries')}) replayed through "
            f"{pair['throughTime']} reproduce {pair['newer']} ({counted(record['namespaces'], 'namespace')}, "
            f"{counted(record['documents'], 'document')}, {record['durationSeconds']}s{_on_server(record)})"
        )
    return 0


def _on_server(record: dict[str, Any]) -> str:
    """Where a proof ran and what it wrote there (integrity/proof_server.py)."""
    if not record.get("server"):
        return ""
    return f" on the {record['server']} server ({human_size(int(record.get('writtenBytes', 0)))} written)"
