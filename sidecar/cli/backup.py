"""``sidecar backup``: one backup now (``--once``: a CronJob's, its metrics pushed)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from sidecar.cli.common import EXIT_FAILED, fail
from sidecar.config import Settings
from sidecar.progress import TerminalProgress
from sidecar.service import BackupService
from sidecar.text import counted


def add_parser(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="take one backup now, apply retention, then its integrity test (SIDECAR_VERIFY_AFTER_BACKUP)",
    )
    backup.add_argument(
        "--once",
        action="store_true",
        help="CronJob mode: record the run with trigger=cronjob and push metrics if configured",
    )
    backup.add_argument("--quiet", action="store_true", help="no progress bar")
    backup.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    service = BackupService(settings)
    job = service.new_job("backup", "cronjob" if args.once else "manual")
    push = _metrics_pusher(settings, service) if args.once and settings.pushgateway_url else None
    try:
        with TerminalProgress(job.progress, enabled=not args.quiet):
            entry = service.run_backup(job)
    finally:
        if push:
            push()
    print(
        f"backup completed: {settings.backup_dir / entry['fileName']} ({entry['fileSize']}, "
        f"{counted(sum(ns['documents'] for ns in entry['namespaces'].values()), 'document')}, "
        f"{entry['durationSeconds']}s)"
    )
    verdict = entry.get("lastVerification")
    if verdict and not verdict["ok"]:
        level = verdict["level"]
        reason = entry["verification"][level]["reason"]
        return fail(f"{entry['fileName']} was written but its {level} test failed: {reason}", EXIT_FAILED)
    if verdict:
        print(f"{verdict['level']} integrity test passed")
    return 0


def _metrics_pusher(settings: Settings, service: BackupService) -> Callable[[], None]:
    """CronJob mode: after the run, good or bad, push-add its metrics to the Pushgateway."""
    from sidecar.health import HealthMonitor
    from sidecar.metrics import SidecarMetrics

    health = HealthMonitor(settings)
    metrics = SidecarMetrics(settings, service, health)

    def push() -> None:
        health.probe()
        metrics.refresh_catalog()
        try:
            metrics.push(settings.pushgateway_url)
        except OSError as exc:
            print(
                f"sidecar: warning: metrics not pushed to {settings.pushgateway_url}: {exc}", file=sys.stderr
            )
        finally:
            health.close()

    return push
