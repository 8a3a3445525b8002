"""``sidecar restore``: an archive or a point in time restored, after its verification."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sidecar.cli.common import time_zone
from sidecar.config import ConfigError, Settings
from sidecar.engine.restore_plan import CLI_WORDING
from sidecar.pitr.planning.restore_point import PointTarget
from sidecar.progress import TerminalProgress
from sidecar.service import BackupService
from sidecar.service.restore_request import RestoreRequest
from sidecar.text import counted


def add_parser(sub: Any) -> None:
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
        type=time_zone,
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


def request_of(args: argparse.Namespace, settings: Settings) -> RestoreRequest:
    """The restore the flags ask for (the flags are named as the request's fields)."""
    if len(args.ns_from) != len(args.ns_to):
        raise ConfigError("--ns-from and --ns-to come in pairs")
    flags = ("ns_include", "ns_exclude", "ns_from", "ns_to", "drop", "dry_run", "engine")
    return RestoreRequest(
        file_name=args.file,
        latest=args.latest,
        point=_point_target(args, settings),
        oplog_replay=not args.no_oplog_replay,
        safety_backup=not args.no_safety_backup,
        **{name: getattr(args, name) for name in flags},
    ).for_settings(settings)


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    request = request_of(args, settings)
    point = request.point
    service = BackupService(settings)
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
