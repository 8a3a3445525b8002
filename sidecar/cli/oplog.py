"""``sidecar oplog find``: the archived operations that match, for an operator looking for the bad one."""

from __future__ import annotations

import argparse
import json
import sys
import zoneinfo
from typing import Any

from sidecar.cli.common import EXIT_USAGE, time_zone
from sidecar.config import Settings
from sidecar.pitr.find.query import DEFAULT_LIMIT, MAX_LIMIT, OP_CHOICES, FindError, FindQuery
from sidecar.pitr.find.search import find_operations
from sidecar.text import counted
from sidecar.time_input import parse_iso


def add_parser(sub: Any) -> None:
    """The ``oplog`` command and its ``find`` subcommand, on the CLI's subparsers."""
    oplog = sub.add_parser("oplog", help="search the archived oplog (point-in-time recovery)")
    commands = oplog.add_subparsers(dest="oplog_command", required=True, metavar="SUBCOMMAND")
    find = commands.add_parser(
        "find",
        help="list the archived operations that match, each with the --before-op that undoes it",
        description="T is an oplog position t:i (compared with ts) or a time (compared with the wall "
        "time): 2024-12-01T14:31:07+09:00, now-5m, 2h ago, @1733011200; without a zone, in --tz "
        "(default SIDECAR_TIMEZONE); docs/pitr.md, 'Times you can type'. "
        "VALUE is an ObjectId when 24 hex digits, else an integer when a "
        "whole number, else a string ('\"42\"' is the string 42).",
    )
    find.add_argument(
        "--ns", action="append", default=[], metavar="PATTERN", help="db.coll, db.* or *.coll (repeatable)"
    )
    find.add_argument("--op", choices=OP_CHOICES, help="only this kind of operation")
    find.add_argument("--since", metavar="T", help="at or after T")
    find.add_argument("--until", metavar="T", help="at or before T")
    find.add_argument(
        "--tz", type=time_zone, metavar="ZONE", help="read a T without a zone in this IANA zone"
    )
    find.add_argument("--id", metavar="VALUE", help="only operations on the document with this _id")
    find.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"list at most this many (1-{MAX_LIMIT})"
    )
    find.add_argument("--json", action="store_true", help="print the listing as JSON (as the API answers)")
    find.set_defaults(func=cmd_find)


def cmd_find(args: argparse.Namespace, settings: Settings) -> int:
    try:
        tz = args.tz or settings.timezone
        query = FindQuery.parse(args.ns, args.op, args.since, args.until, args.id, args.limit, tz)
    except FindError as exc:
        print(f"sidecar: error: --{exc}", file=sys.stderr)
        return EXIT_USAGE
    listing = find_operations(settings, query)
    if args.json:
        print(json.dumps(listing, ensure_ascii=False, indent=2))
        return 0
    for line in describe(listing, zoneinfo.ZoneInfo(settings.timezone)):
        print(line)
    return 0


def _when(wall: str | None, tz: zoneinfo.ZoneInfo) -> str:
    """``2024-12-01T05:31:07.120Z (14:31:07.120 Asia/Seoul)``."""
    if wall is None:
        return "-"
    local = parse_iso(wall).astimezone(tz)
    return f"{wall} ({local:%Y-%m-%d %H:%M:%S}.{local.microsecond // 1000:03d} {tz.key})"


def _id_text(value: Any) -> str:
    """``ObjectId('...')`` for ``{"$oid": ...}``, else the Extended JSON."""
    if isinstance(value, dict) and list(value) == ["$oid"]:
        return f"ObjectId('{value['$oid']}')"
    return json.dumps(value, ensure_ascii=False)


def _undo_lines(item: dict[str, Any]) -> list[str]:
    return [
        f"    undo as {item['restoredAs']}, beside the live data: {item['restoreCommand']}",
        f"    or in place, discarding {item['dropDiscards']}: {item['dropCommand']}",
    ]


def _item_lines(item: dict[str, Any], tz: zoneinfo.ZoneInfo) -> list[str]:
    fresh = "  [not archived yet]" if "serverOplog" in item["source"] else ""
    if item["kind"] == "group":
        head = (
            f"{counted(item['count'], item['operation'])} on {item['namespace']} between "
            f"{_when(item['firstWall'], tz)} and {_when(item['lastWall'], tz)}, "
            f"{item['firstPosition']} .. {item['lastPosition']}"
        )
        return [head + fresh, *_undo_lines(item)]
    what = item["command"] if item["operation"] == "command" else item["operation"]
    parts = [item["position"], _when(item["wall"], tz), what, item["namespace"]]
    if item["_id"] is not None:
        parts.append(f"_id {_id_text(item['_id'])}")
    if item["detail"]:
        parts.append(f"({item['detail']})")
    if item["transaction"]:
        parts.append("[transaction]")
    return ["  ".join(parts) + f"  --before-op {item['beforeOp']}{fresh}", *_undo_lines(item)]


def _server_line(server: dict[str, Any]) -> str:
    """Where the search went past the archive: the server's oplog after the newest stored entry."""
    after = f"after {server['after']}" if server["after"] else "(nothing archived yet)"
    if server["error"]:
        return f"WARNING: not archived yet, not searched: {server['error']}"
    if not server["searched"]:
        return f"the server's oplog {after} was not searched: {server['skipped']}"
    return (
        f"and the server's oplog {after}, not archived yet: {server['entriesRead']:,} entries read, "
        f"{counted(server['matches'], 'match', 'matches')} (marked [not archived yet])"
    )


def describe(listing: dict[str, Any], tz: zoneinfo.ZoneInfo) -> list[str]:
    s = listing["slices"]
    lines = [
        f"searched {counted(s['total'], 'slice')}: {s['opened']} opened, {s['skipped']} skipped by the "
        f"catalog, {s['unread']} not read; {listing['entriesRead']:,} entries read"
    ]
    lines += [f"WARNING: {u['error']}" for u in s["unreadable"]]
    lines.append(_server_line(listing["serverOplog"]))
    if not listing["items"]:
        lines.append("no matching operation")
    for item in listing["items"]:
        lines += _item_lines(item, tz)
    if listing["truncated"]:
        more = f"search again with --since {listing['next']}"
        lines.append(f"... more after the {listing['count']} listed: {more}")
    if listing["items"]:
        lines.append(
            "each undo gives the data as it was just before that operation (--dry-run shows the plan)"
        )
    return lines
