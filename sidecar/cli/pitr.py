"""``sidecar pitr stream`` (the archiver alone, e.g. beside CronJob backups) and ``sidecar pitr status``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sidecar.config import Settings
from sidecar.engine.replay.engine import MAX_INC
from sidecar.logs import Redactor, setup_logging
from sidecar.metrics_http import serve_archiver_metrics
from sidecar.pitr.capture.probe import BEAT_SECONDS, beat, health_problem, write_health
from sidecar.pitr.capture.runner import PitrRunner
from sidecar.pitr.planning.restore_point import PointRefused, PointTarget, plan_point
from sidecar.pitr.record.slices import oplog_dir
from sidecar.pitr.status import pitr_status
from sidecar.text import human_size

EXIT_REFUSED = 2
EXIT_SERVER_UNREACHABLE = 4  # ``pitr status``: the archive's facts printed, the server's oplog not read


def add_parser(sub: Any) -> None:
    """The ``pitr`` command and its subcommands, on the CLI's subparsers."""
    pitr = sub.add_parser("pitr", help="point-in-time recovery: the continuous oplog archive")
    commands = pitr.add_subparsers(dest="pitr_command", required=True, metavar="SUBCOMMAND")
    stream = commands.add_parser(
        "stream", help="archive the oplog into slices until SIGTERM/SIGINT (which store the last one)"
    )
    stream.add_argument(
        "--health-file",
        type=Path,
        metavar="PATH",
        help=f"rewrite PATH every {BEAT_SECONDS:g}s with the archiver's state, for `sidecar pitr probe`",
    )
    stream.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the archiver's Prometheus metrics on SIDECAR_HOST:PORT/metrics (CronJob mode's alerts)",
    )
    stream.set_defaults(func=cmd_stream, logs_to_terminal=True)  # its log is its output
    probe = commands.add_parser(
        "probe", help="exit 0 when `pitr stream --health-file` is alive (an exec probe), else 1 and why"
    )
    probe.add_argument("--health-file", type=Path, metavar="PATH", required=True)
    probe.add_argument("--max-age", type=float, default=30.0, metavar="SECONDS", help="default 30")
    probe.add_argument("--ready", action="store_true", help="also require the archiver to be tailing")
    probe.set_defaults(func=cmd_probe)
    status = commands.add_parser("status", help="slices, windows, gaps, lag and the server's oplog window")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--verify", action="store_true", help="check every slice's content (sha256, gzip, BSON, order)"
    )
    status.set_defaults(func=cmd_status)
    slices = commands.add_parser(
        "slices",
        help="for the stock tools: the slice files (in order) a restore to a point replays, one path a line",
    )
    point = slices.add_mutually_exclusive_group(required=True)
    point.add_argument("--to-time", metavar="T", help="through T: ISO-8601 or t:i (as sidecar restore)")
    point.add_argument("--before-op", metavar="T:I", help="up to, not including, that entry")
    slices.add_argument("--tz", help="the zone of a --to-time without one (default SIDECAR_TIMEZONE)")
    shown = slices.add_mutually_exclusive_group()
    shown.add_argument("--base", action="store_true", help="print the base backup's archive path instead")
    shown.add_argument(
        "--oplog-limit", action="store_true", help="print mongorestore's --oplogLimit for the point instead"
    )
    slices.set_defaults(func=cmd_slices)


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pitr == "off":
        print("sidecar: error: SIDECAR_PITR=off: nothing to archive", file=sys.stderr)
        return EXIT_REFUSED
    setup_logging(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner, redact = PitrRunner(settings), Redactor.for_settings(settings)
    if args.health_file:
        try:  # a path the probe could never read is an error now, not a restart loop later
            write_health(args.health_file, runner.state, redact)
        except OSError as exc:
            print(f"sidecar: error: cannot write the health file {args.health_file}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    server = None
    if args.metrics_port is not None:
        try:
            server = serve_archiver_metrics(settings, runner.state, args.metrics_port)
        except (OSError, OverflowError) as exc:
            where = f"{settings.host}:{args.metrics_port}"
            print(f"sidecar: error: --metrics-port: cannot listen on {where}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    runner.start()
    beaten = time.monotonic()
    while not stop.wait(0.5) and not runner.wait(0):
        if args.health_file and time.monotonic() - beaten >= BEAT_SECONDS:
            beat(args.health_file, runner.state, redact)
            beaten = time.monotonic()
    runner.stop()
    if server is not None:
        server.shutdown()
    if args.health_file:
        args.health_file.unlink(missing_ok=True)  # a stopped archiver is never reported alive
    if runner.fatal or runner.state.enabled is False:
        reason = runner.fatal or "SIDECAR_PITR=auto and the server is standalone: it has no oplog"
        print(f"sidecar: error: {reason}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_probe(args: argparse.Namespace, settings: Settings) -> int:
    problem = health_problem(args.health_file, args.max_age, args.ready)
    print(f"sidecar: {problem}" if problem else "ok", file=sys.stderr if problem else sys.stdout)
    return 1 if problem else 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status = pitr_status(settings, deep=args.verify)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
    else:
        for line in describe(status):
            print(line)
    unreachable = status["serverOplog"].get("error")
    if unreachable:  # the archive's facts are above; the server's are not
        print(f"sidecar: error: cannot read the server's oplog window: {unreachable}", file=sys.stderr)
        return EXIT_SERVER_UNREACHABLE
    return 0


def cmd_slices(args: argparse.Namespace, settings: Settings) -> int:
    """The stock-tools path of docs/verify-restore.md: what ``plan_point`` picks, as paths."""
    try:
        target = (
            PointTarget.before_op(args.before_op)
            if args.before_op is not None
            else PointTarget.to_time(args.to_time, args.tz or settings.timezone)
        )
    except ValueError as exc:
        print(f"sidecar: error: {'--before-op' if args.before_op else '--to-time'}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        plan = plan_point(settings, target)
    except PointRefused as exc:
        print(f"sidecar: error: {exc}", file=sys.stderr)
        return 1
    if args.base:
        print(settings.backup_dir / plan.base)
    elif args.oplog_limit:
        print(oplog_limit(target))
    else:
        for entry in plan.slices:
            print(oplog_dir(settings) / entry["fileName"])
    return 0


def oplog_limit(target: PointTarget) -> str:
    """mongorestore's ``--oplogLimit`` (it replays the entries *before* it) for the same point."""
    if target.before is not None:
        return f"{target.before.time}:{target.before.inc}"
    until = target.point
    if until.inc == MAX_INC:  # a time: its whole second
        return f"{until.time + 1}:0"
    return f"{until.time}:{until.inc + 1}"


def _pos(data: dict[str, int] | None) -> str:
    return f"{data['t']}.{data['i']}" if data else "-"


def archiver_line(archiver: dict[str, Any]) -> str:
    """``archiver: running since ... (pid 12), caught up to ..., RPO 1.2s`` or why it is not."""
    if archiver["running"]:
        said = f"archiver: running since {archiver['since']} (pid {archiver['pid']})"
    elif archiver["locked"]:
        said = f"archiver: starting (pid {archiver['pid']})"
    elif archiver["pid"] is None:
        said = "archiver: not running (it never ran on this directory)"
    else:
        alive = ", its process waits to restart" if archiver["processAlive"] else ""
        said = f"archiver: not running (pid {archiver['pid']} stopped at {archiver['stoppedAt']}{alive})"
    if archiver["caughtUp"]:
        said += f", caught up to {archiver['caughtUp']}, RPO {archiver['rpoSeconds']:.1f}s"
    if archiver["lastError"]:
        said += f"; last error: {archiver['lastError']}"
    return said


def describe(status: dict[str, Any]) -> list[str]:
    s = status["slices"]
    lines = [f"oplog archive in {status['directory']} (SIDECAR_PITR={status['mode']})"]
    lines.append(archiver_line(status["archiver"]))
    if not s["count"]:
        lines.append("no slices yet")
    else:
        lines.append(
            f"slices: {s['count']} ({s['entries']:,} entries, {human_size(s['sizeBytes'])}), "
            f"{_pos(s['first'])} .. {_pos(s['last'])} ({s['firstTime']} .. {s['lastTime']})"
        )
        lines.append(f"lag: {status['lagSeconds']:.1f}s since the newest stored entry")
        if s.get("leftOutEntries"):
            lines.append(
                f"left out: {s['leftOutEntries']:,} entries of restore proofs' scratch databases "
                f"(proofs run on this server by SIDECAR_DRILL_MONGODB_URI=source)"
            )
    server = status["serverOplog"]
    if "error" in server:
        lines.append("server oplog: unknown (the server cannot be reached)")
    else:
        span = f"{server['firstTime']} .. {server['lastTime']}"
        lines.append(f"server oplog: {span} ({server['seconds']:.0f}s)")
    for w in status["windows"]:
        caught_up = f" (caught up; its last entry {w['lastEntryTime']})" if w["caughtUp"] else ""
        lines.append(
            f"window: {w['startTime']} .. {w['endTime']} ({_pos(w['start'])} .. {_pos(w['end'])}), "
            f"from {w['baseBackup']}{caught_up}"
        )
    if not status["windows"]:
        lines.append("no restorable window: no base backup's consistent point lies in the archive")
    check = status.get("verification", {}).get("pitr")
    if check:
        verdict = "passed" if check["ok"] else f"FAILED: {check['reason']}"
        where = f" on the {check['server']} server" if check.get("server") else ""
        lines.append(f"pitr check {check['older']} -> {check['newer']} at {check['at']}{where}: {verdict}")
    for g in status["gaps"]:
        lines.append(
            f"GAP {g['cause']}: after {_pos(g['from'])} ({g['fromTime']}) until {_pos(g['to'])} "
            f"({g['toTime']}): {g['detail']}"
        )
    return lines
