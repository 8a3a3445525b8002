"""``/metrics`` of ``sidecar pitr stream --metrics-port``: the archiver alone (CronJob mode) has no
aiohttp app, so a small threaded WSGI server serves ``metrics.archiver_registry``. Like ``sidecar
serve`` it asks for the read or admin token when ``SIDECAR_METRICS_REQUIRE_TOKEN`` is set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from sidecar.api.auth import Role, TokenAuth
from sidecar.config import Settings
from sidecar.metrics import archiver_registry
from sidecar.pitr.capture.state import PitrState

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one every few seconds would drown the archiver's own lines."""


def _json(
    start_response: Callable[..., Any], status: str, code: str, message: str, *headers: tuple[str, str]
) -> list[bytes]:
    start_response(status, [("Content-Type", "application/json"), *headers])
    return [json.dumps({"error": code, "message": message}).encode()]


def _app(settings: Settings, metrics: WsgiApp) -> WsgiApp:
    auth = TokenAuth(settings)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _json(start_response, "404 Not Found", "not_found", "only /metrics is served here")
        if settings.metrics_require_token:
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() != "bearer" or auth.role_of(token.strip()) == Role.NONE:
                message = "SIDECAR_METRICS_REQUIRE_TOKEN: send 'Authorization: Bearer <read token>'"
                challenge = ("WWW-Authenticate", 'Bearer realm="mongo-backup-sidecar"')
                return _json(start_response, "401 Unauthorized", "unauthorized", message, challenge)
        return metrics(environ, start_response)

    return app


def serve_archiver_metrics(settings: Settings, state: PitrState, port: int) -> WSGIServer:
    """Serve the archiver's metrics on ``SIDECAR_HOST``:``port`` from a daemon thread; ``shutdown()``
    stops it. Raises OSError when the address cannot be bound."""
    metrics = make_wsgi_app(archiver_registry(settings, state))
    server = make_server(
        settings.host, port, _app(settings, metrics), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="pitr-metrics", daemon=True).start()
    return server
