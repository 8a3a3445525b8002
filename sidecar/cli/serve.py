"""``sidecar serve``: the sidecar itself (API, schedule, metrics, health)."""

from __future__ import annotations

import argparse
from typing import Any

from sidecar.config import Settings


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve", help="run the sidecar: HTTP API on SIDECAR_PORT, scheduled backups, metrics, health"
    )
    serve.set_defaults(func=cmd_serve, logs_to_terminal=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from sidecar.api.app import require_admin_token, run_service
    from sidecar.logs import setup_logging

    require_admin_token(settings)
    tail = setup_logging(settings)
    asyncio.run(run_service(settings, log_tail=tail))
    return 0
