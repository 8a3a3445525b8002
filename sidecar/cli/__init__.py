"""``sidecar``: serve | backup | verify | restore | list | prune | pitr | oplog | demo.

Exit 0 on success; otherwise one line ``sidecar: error: <reason>`` on stderr and a non-zero code:
2 for bad usage or configuration, 1 for a failed job, 3 when another job holds the lock; ``pitr status``
exits 4 when MongoDB cannot be reached (after printing what the archive says).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sidecar.cli.oplog import add_parser as add_oplog_parser
from sidecar.cli.pitr import add_parser as add_pitr_parser
from sidecar.config import ConfigError, Settings, load_settings
from sidecar.engine.restore_plan import CLI_WORDING
from sidecar.integrity.failure import LEVELS
from sidecar.jobs import JobBusy
from sidecar.pitr.planning.restore_point import PointTarget
from sidecar.progress import TerminalProgress
from sidecar.service import BackupService, JobFailed
from sidecar.service.restore_request import RestoreRequest
from sidecar.store.catalog import CatalogError, Entry, Reconciliation, Status
from sidecar.text import counted, human_size
from sidecar.time_input import zone_name

EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 1, 2, 3


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
        return _fail(f"{entry['fileName']} was written but its {level} test failed: {reason}", EXIT_FAILED)
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


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if len(args.ns_from) != len(args.ns_to):
        raise ConfigError("--ns-from and --ns-to come in pairs")
    service = BackupService(settings)
    point = _point_target(args, settings)
    request = RestoreRequest(
        file_name=args.file,
        latest=args.latest,
        point=point,
        ns_include=args.ns_include,
        ns_exclude=args.ns_exclude,
        ns_from=args.ns_from,
        ns_to=args.ns_to,
        drop=args.drop,
        dry_run=args.dry_run,
        oplog_replay=not args.no_oplog_replay,
        safety_backup=not args.no_safety_backup,
        engine=args.engine,
    ).for_settings(settings)
    job = service.new_job("restore", **request.as_json())
    with TerminalProgress(job.progress, enabled=not (args.quiet or args.json)):
        result = service.run_restore(job, request, wording=CLI_WORDING)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    if point is not None:
        _print_point(result["pointInTime"], dry_run=args.dry_run)
    verb = "would restore" if args.dry_run else "restored"
    for ns in result["namespaces"]:
        print(
            f"{verb} {ns['source']} -> {ns['target']} ({ns['type']}, {ns['action']}): "
            f"{counted(ns['documents'], 'document')}, indexes: {', '.join(ns['indexes']) or 'none'}"
        )
    for skipped in result.get("skipped", []):
        print(f"skipped {skipped['namespace']}: {skipped['reason']}")
    if args.dry_run:
        for warning in result.get("warnings", []):
            print(f"warning: {warning}")
        backup = result.get("safetyBackup")
        if backup:
            print(f"would first take a safety backup of {', '.join(backup['wouldBackUp'])}")
        print(f"dry run of {result['fileName']}: nothing was written")
        return 0
    if result.get("safetyBackup"):
        print(f"safety backup taken first: {result['safetyBackup']}")
    replay = (result.get("oplog") or {}).get("replay")
    if replay:
        print(
            f"oplog replayed: {counted(replay['applied'], 'operation')} applied, "
            f"{counted(replay['indexBuilds'], 'index build')}, {replay['skipped']} skipped"
        )
    print(
        f"restore completed: {result['fileName']} ({restored_counts(result)}; "
        f"counts checked against the archive: {'ok' if result['postRestoreCheck']['ok'] else 'MISMATCH'}; "
        f"{result['durationSeconds']}s)"
    )
    return 0


def restored_counts(result: dict[str, Any]) -> str:
    """``800 documents from the base, 20,000 operations replayed``: the base's writes and the
    replay's (the base archive's own oplog, or the point in time's slices) apart."""
    base = counted(result["documentsWritten"], "document")
    point = (result.get("pointInTime") or {}).get("replay")
    replayed = (
        point["operations"] if point else ((result.get("oplog") or {}).get("replay") or {}).get("applied")
    )
    if replayed is None:
        return base
    return f"{base} from the base, {counted(replayed, 'operation')} replayed"


def _point_target(args: argparse.Namespace, settings: Settings) -> PointTarget | None:
    """``--to-time`` (a time without a zone is read in ``--tz``, else SIDECAR_TIMEZONE) or ``--before-op``."""
    try:
        if args.before_op is not None:
            return PointTarget.before_op(args.before_op)
        if args.to_time is not None:
            return PointTarget.to_time(args.to_time, args.tz or settings.timezone)
    except ValueError as exc:
        raise ConfigError(f"{'--before-op' if args.before_op is not None else '--to-time'}: {exc}") from None
    return None


def _print_point(point: dict, *, dry_run: bool) -> None:
    planned, end = point["planned"], point.get("endPoint")
    base = point["baseConsistentPoint"]
    print(f"base backup: {point['baseBackup']} (consistent point {base['t']}:{base['i']})")
    slices = ", ".join(point["slices"]) or "none (the base backup's own oplog reaches the point)"
    print(f"slices: {slices}")
    for ns, ops in planned["namespaces"].items():
        print(f"  {ns}: " + ", ".join(f"{counted(n, op)}" for op, n in ops.items()))
    verb = "would replay" if dry_run else "replayed"
    replayed = point.get("replay", planned)
    print(
        f"{verb} {counted(replayed['entries'], 'oplog entry', 'oplog entries')} "
        f"({counted(replayed['operations'], 'operation')}, "
        f"{counted(replayed['transactions'], 'transaction')}); "
        f"end point: {end['time'] if end else 'the base backup itself'}"
    )
    discarded = point.get("discarded") or {}
    if dry_run and discarded.get("total"):
        ops = discarded["operations"]
        shown = f"the first {len(ops)} of {discarded['total']:,}"
        print(f"writes after the point that --drop would discard ({shown}):")
        for op in ops:
            about = json.dumps(op["_id"]) if op["_id"] is not None else op["command"]
            print(f"  {op['position']}  {op['wall'] or '-'}  {op['namespace']}  {op['operation']} {about}")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from sidecar.api.app import require_admin_token, run_service
    from sidecar.logs import setup_logging

    require_admin_token(settings)
    tail = setup_logging(settings)
    asyncio.run(run_service(settings, log_tail=tail))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from sidecar.demo import run_demo

    return run_demo(Path(args.dir))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="mongo-backup-sidecar: back up MongoDB, test and restore the backups, serve the API.",
        epilog="Exit codes: 0 success; 1 a failed job; 2 bad usage or configuration; 3 another job holds "
        "the lock. 'sidecar COMMAND --help' describes each command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    listing = sub.add_parser("list", help="show the catalog")
    listing.add_argument("--json", action="store_true", help="the catalog entries as JSON")
    listing.set_defaults(func=cmd_list)

    prune = sub.add_parser("prune", help="apply retention: remove archives past SIDECAR_RETENTION_DAYS")
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    prune.set_defaults(func=cmd_prune)

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

    restore = sub.add_parser(
        "restore", help="restore a backup (verified first; a safety backup of what it overwrites is taken)"
    )
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("file", nargs="?", help="a catalog file name or a path to an archive")
    which.add_argument(
        "--to-time",
        metavar="T",
        help="restore to a point: a time (its whole second; 2024-12-01T14:31:07+09:00, now-5m, "
        "@1733011200: docs/pitr.md, 'Times you can type') or an oplog position t:i",
    )
    which.add_argument(
        "--before-op", metavar="T:I", help="restore to just before this oplog entry (`sidecar oplog find`)"
    )
    restore.add_argument(
        "--tz",
        type=zone_name,
        metavar="ZONE",
        help="read a --to-time without a zone in this IANA zone (default: SIDECAR_TIMEZONE)",
    )
    which.add_argument(
        "--latest",
        action="store_true",
        help="the newest usable backup: completed, not a safety copy, newest integrity test not failed",
    )
    restore.add_argument(
        "--ns-include",
        action="append",
        default=[],
        metavar="P",
        help="only namespaces matching db.coll (* wildcard)",
    )
    restore.add_argument(
        "--ns-exclude", action="append", default=[], metavar="P", help="skip matching namespaces"
    )
    restore.add_argument(
        "--ns-from", action="append", default=[], metavar="P", help="rename from (with --ns-to)"
    )
    restore.add_argument("--ns-to", action="append", default=[], metavar="P", help="rename to, e.g. 'copy.*'")
    restore.add_argument(
        "--drop", action="store_true", help="drop each target collection before restoring it"
    )
    restore.add_argument(
        "--dry-run", action="store_true", help="report the namespaces, documents and indexes; write nothing"
    )
    restore.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="skip the backup of the namespaces the restore overwrites",
    )
    restore.add_argument(
        "--no-oplog-replay", action="store_true", help="do not replay the archive's oplog on a full restore"
    )
    restore.add_argument(
        "--engine",
        choices=("native", "mongorestore"),
        default=None,
        help="native, or the stock mongorestore (default: mongorestore when SIDECAR_ENGINE=mongodump)",
    )
    restore.add_argument("--json", action="store_true", help="print the restore report as JSON")
    restore.add_argument("--quiet", action="store_true", help="no progress bar")
    restore.set_defaults(func=cmd_restore)

    serve = sub.add_parser(
        "serve", help="run the sidecar: HTTP API on SIDECAR_PORT, scheduled backups, metrics, health"
    )
    serve.set_defaults(func=cmd_serve)

    add_pitr_parser(sub)
    add_oplog_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="try it here: embedded MongoDB with sample data, the sidecar, a first backup (Ctrl-C stops)",
    )
    demo.add_argument("--dir", default="var/demo", help="where the demo keeps its data (default: var/demo)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command not in ("serve", "demo") and getattr(args, "pitr_command", None) != "stream":
            _log_to_files_only(settings)
        return args.func(args, settings)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except JobBusy as exc:
        return _fail(str(exc), EXIT_BUSY)
    except (JobFailed, CatalogError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:  # one line for the operator, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILED)


def _log_to_files_only(settings: Settings) -> None:
    """One-shot commands keep the terminal to their summary or their one error line; the job records
    go to the daily files the runbook greps (logs/combined-*.log, logs/error-*.log)."""
    from sidecar.logs import setup_logging

    try:
        setup_logging(settings, console=False)
    except OSError:  # an unwritable log directory must not stop a backup
        setup_logging(settings, console=False, files=False)


def _fail(message: str, code: int) -> int:
    print(f"sidecar: error: {message}", file=sys.stderr)
    return code
