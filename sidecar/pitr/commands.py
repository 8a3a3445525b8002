"""``sidecar pitr stream`` (the archiver alone, e.g. beside CronJob backups) and ``sidecar pitr status``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from sidecar.config import Settings
from sidecar.logs import setup_logging
from sidecar.pitr.runner import PitrRunner
from sidecar.pitr.status import pitr_status
from sidecar.store.catalog import human_size

EXIT_REFUSED = 2


def add_parser(sub: Any) -> None:
    """The ``pitr`` command and its subcommands, on the CLI's subparsers."""
    pitr = sub.add_parser("pitr", help="point-in-time recovery: the continuous oplog archive")
    commands = pitr.add_subparsers(dest="pitr_command", required=True, metavar="SUBCOMMAND")
    stream = commands.add_parser(
        "stream", help="archive the oplog into slices until SIGTERM/SIGINT (which store the last one)"
    )
    stream.set_defaults(func=cmd_stream)
    status = commands.add_parser("status", help="slices, windows, gaps, lag and the server's oplog window")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--verify", action="store_true", help="check every slice's content (sha256, gzip, BSON, order)"
    )
    status.set_defaults(func=cmd_status)


def cmd_stream(args: argparse.Namespace, settings: Settings) -> int:
    if settings.pitr == "off":
        print("sidecar: error: SIDECAR_PITR=off: nothing to archive", file=sys.stderr)
        return EXIT_REFUSED
    setup_logging(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runner = PitrRunner(settings)
    runner.start()
    while not stop.wait(0.5) and not runner.wait(0):
        pass
    runner.stop()
    if runner.fatal or runner.state.enabled is False:
        reason = runner.fatal or "SIDECAR_PITR=auto and the server is standalone: it has no oplog"
        print(f"sidecar: error: {reason}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    status = pitr_status(settings, deep=args.verify)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
        return 0
    for line in describe(status):
        print(line)
    return 0


def _pos(data: dict[str, int] | None) -> str:
    return f"{data['t']}.{data['i']}" if data else "-"


def describe(status: dict[str, Any]) -> list[str]:
    s = status["slices"]
    lines = [f"oplog archive in {status['directory']} (SIDECAR_PITR={status['mode']})"]
    if not s["count"]:
        lines.append("no slices yet")
    else:
        lines.append(
            f"slices: {s['count']} ({s['entries']:,} entries, {human_size(s['sizeBytes'])}), "
            f"{_pos(s['first'])} .. {_pos(s['last'])} ({s['firstTime']} .. {s['lastTime']})"
        )
        lines.append(f"lag: {status['lagSeconds']:.1f}s since the newest stored entry")
    server = status["serverOplog"]
    if "error" in server:
        lines.append(f"server oplog: unknown ({server['error']})")
    else:
        span = f"{server['firstTime']} .. {server['lastTime']}"
        lines.append(f"server oplog: {span} ({server['seconds']:.0f}s)")
    for w in status["windows"]:
        lines.append(
            f"window: {w['startTime']} .. {w['endTime']} ({_pos(w['start'])} .. {_pos(w['end'])}), "
            f"from {w['baseBackup']}"
        )
    if not status["windows"]:
        lines.append("no restorable window: no base backup's consistent point lies in the archive")
    for g in status["gaps"]:
        lines.append(
            f"GAP {g['cause']}: after {_pos(g['from'])} ({g['fromTime']}) until {_pos(g['to'])} "
            f"({g['toTime']}): {g['detail']}"
        )
    return lines
