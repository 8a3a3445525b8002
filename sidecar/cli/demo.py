"""``sidecar demo``: an embedded server with sample data, the sidecar and a first backup."""

from __future__ import annotations

import argparse
from typing import Any

from sidecar.config import Settings


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="try it here: embedded MongoDB with sample data, the sidecar, a first backup (Ctrl-C stops)",
    )
    demo.add_argument("--dir", default="var/demo", help="where the demo keeps its data (default: var/demo)")
    demo.set_defaults(func=cmd_demo, logs_to_terminal=True)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from sidecar.demo import run_demo

    return run_demo(Path(args.dir))
