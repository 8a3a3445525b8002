"""``sidecar list``: the catalog, and where it and the directory disagree."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sidecar.config import Settings
from sidecar.service import BackupService
from sidecar.store.catalog import CatalogError, Entry, Reconciliation, Status


def add_parser(sub: Any) -> None:
    listing = sub.add_parser("list", help="show the catalog")
    listing.add_argument("--json", action="store_true", help="the catalog entries as JSON")
    listing.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    service = BackupService(settings)
    if not service.catalog.path.is_file():
        raise CatalogError(
            f"no catalog at {service.catalog.path}: no backup was taken there yet, "
            "or SIDECAR_BACKUP_DIR should name another directory"
        )
    entries = service.list_backups()
    if args.json:
        print(json.dumps(entries, ensure_ascii=False, indent=2))
        return 0
    if not entries:
        print(f"no backups in {settings.backup_dir}")
    for e in entries:
        print(
            f"{e['createdAt']}  {e['status']:<9}  {e['fileSize']:>8}  {e.get('trigger', '-'):<11}  "
            f"{_newest_test(e):<12}  {e['fileName']}" + (f"  ({e['error']})" if e.get("error") else "")
        )
    _warn_disagreements(service.catalog.reconcile(settings.file_prefix))
    return 0


def _newest_test(entry: Entry) -> str:
    """``full passed``, ``quick FAILED`` or ``untested``; ``-`` for an entry without an archive."""
    last = entry.get("lastVerification")
    if last is not None:
        return f"{last['level']} {'passed' if last['ok'] else 'FAILED'}"
    return "untested" if entry.get("status") == Status.COMPLETED else "-"


def _warn_disagreements(report: Reconciliation) -> None:
    """Where the directory and the catalog disagree; reported, never fixed behind the operator's back."""
    for name in report.missing:
        print(f"warning: {name} is completed in the catalog but missing from the directory", file=sys.stderr)
    for name in report.stray:
        print(f"warning: {name} is in the directory but not in the catalog", file=sys.stderr)
    for name in report.partial:
        print(
            f"warning: {name} is left over from an interrupted backup (the next backup removes it)",
            file=sys.stderr,
        )
