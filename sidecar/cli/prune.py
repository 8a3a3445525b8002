"""``sidecar prune``: retention applied (or, ``--dry-run``, shown)."""

from __future__ import annotations

import argparse
from typing import Any

from sidecar.config import Settings
from sidecar.service import BackupService
from sidecar.text import counted


def add_parser(sub: Any) -> None:
    prune = sub.add_parser("prune", help="apply retention: remove archives past SIDECAR_RETENTION_DAYS")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    service = BackupService(settings)
    removals = service.plan_prune() if args.dry_run else service.run_prune()
    verb = "would remove" if args.dry_run else "removed"
    for r in removals:
        print(f"{verb} {r.file_name} ({r.destination}): {r.reason}")
    slices = sum(1 for r in removals if r.kind == "slice")
    also = f" and {counted(slices, 'oplog slice copy', 'oplog slice copies')}" if slices else ""
    print(f"{verb} {counted(len(removals) - slices, 'archive')}{also}")
    return 0
