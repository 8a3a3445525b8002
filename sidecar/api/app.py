"""The aiohttp app factory and ``sidecar serve`` itself; the ``Sidecar`` it serves is in ``api/state.py``.

Shutdown (SIGTERM/SIGINT): stop taking jobs, give the running job ``SIDECAR_SHUTDOWN_GRACE_SECONDS``
to finish, then set the service's cancel Event so the backup aborts cleanly (its partial file removed,
its catalog entry marked failed); the HTTP server keeps answering until then. A second signal cancels
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from sidecar import __version__
from sidecar.api import routes
from sidecar.api.auth import OPEN, TokenAuth, requires
from sidecar.api.errors import Handler, error_middleware
from sidecar.api.protocol import ApiRunner
from sidecar.api.state import SIDECAR_KEY, Sidecar
from sidecar.api.validation import MAX_BODY_BYTES
from sidecar.config import ConfigError, Settings
from sidecar.logs import LogTail

log = logging.getLogger("sidecar.api")
DOCS_PATH = "/api-docs"
SPEC_JSON_PATH = "/api-docs/openapi.json"
SPEC_YAML_PATH = "/api-docs/openapi.yaml"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # stop the sidecar (a second one cancels the running job)


@functools.cache
def _packaged(name: str) -> str:
    return importlib.resources.files("sidecar.api").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def openapi_document() -> dict[str, Any]:
    doc = yaml.safe_load(_packaged("openapi.yaml"))
    doc["info"]["version"] = __version__
    return doc


@requires(OPEN)
async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=_packaged("static/index.html"), content_type="text/html")


@requires(OPEN)
async def docs_init(request: web.Request) -> web.Response:
    return web.Response(text=_packaged("static/init.js"), content_type="application/javascript")


@requires(OPEN)
async def spec_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(), dumps=functools.partial(json.dumps, ensure_ascii=False))


@requires(OPEN)
async def spec_yaml(request: web.Request) -> web.Response:
    text = yaml.safe_dump(openapi_document(), allow_unicode=True, sort_keys=False)
    return web.Response(text=text, content_type="application/yaml")


def create_app(sidecar: Sidecar) -> web.Application:
    auth = TokenAuth(sidecar.settings)
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[error_middleware, auth.middleware(), _access_log]
    )
    app[SIDECAR_KEY] = sidecar
    r = app.router
    r.add_get("/api/backup/status", routes.backup_status)
    r.add_get("/api/backup/list", routes.backup_list)
    r.add_post("/api/backup/create", routes.backup_create)
    r.add_post("/api/backup/test", routes.backup_test)
    r.add_post("/api/backup/restore", routes.backup_restore)
    r.add_get("/api/backup/jobs/{id}", routes.get_job)
    r.add_get("/api/backup/pitr", routes.backup_pitr)
    r.add_get("/api/backup/oplog", routes.backup_oplog)
    r.add_get("/api/v1/monitoring/status", routes.monitoring_status)
    r.add_get("/api/v1/monitoring/metrics", routes.monitoring_metrics)
    r.add_get("/api/v1/monitoring/logs", routes.monitoring_logs)
    r.add_get("/api/v1/monitoring/alerts", routes.monitoring_alerts)
    r.add_get("/health", routes.health)
    r.add_get("/metrics", routes.metrics)
    r.add_get(DOCS_PATH, docs_page)
    r.add_get(DOCS_PATH + "/", docs_page)
    r.add_get(DOCS_PATH + "/init.js", docs_init)
    r.add_get(SPEC_JSON_PATH, spec_json)
    r.add_get(SPEC_YAML_PATH, spec_yaml)
    r.add_static(DOCS_PATH + "/assets", swagger_ui_path, append_version=False)
    app.on_startup.append(lambda _: sidecar.start())
    app.on_shutdown.append(lambda _: sidecar.stop())
    return app


@web.middleware
async def _access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    t0 = time.perf_counter()
    response = await handler(request)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s -> %s in %.1f ms",
            request.method,
            request.path,
            response.status,
            (time.perf_counter() - t0) * 1000,
        )
    return response


def require_admin_token(settings: Settings) -> None:
    if not settings.admin_token:
        raise ConfigError(
            "SIDECAR_ADMIN_TOKEN: not set; the API needs an admin token of at least 16 characters "
            "(set SIDECAR_ADMIN_TOKEN, or SIDECAR_ADMIN_TOKEN_FILE for a mounted secret; "
            "SIDECAR_READ_TOKEN optionally adds a read-only token)"
        )


async def run_service(
    settings: Settings,
    *,
    log_tail: LogTail | None = None,
    on_ready: Callable[[Sidecar], Awaitable[None]] | None = None,
    sidecar: Sidecar | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT, then shut down as the module doc says. True on a clean drain."""
    sidecar = sidecar or Sidecar(settings, log_tail=log_tail)
    app = create_app(sidecar)
    app.on_shutdown.clear()  # draining is done below, while the server still answers
    runner = ApiRunner(app, access_log=None, handle_signals=False)  # JSON errors for unparsable requests
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=5.0)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"SIDECAR_PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                log.warning("second %s: cancelling the running job now", signal.Signals(signum).name)
                sidecar.service.cancel.set()
                return
            log.info("%s received: stopping", signal.Signals(signum).name)
            stop.set()

        for signum in _SIGNALS:
            loop.add_signal_handler(signum, on_signal, signum)
        log.info(
            "mongo-backup-sidecar %s listening on http://%s:%d (MongoDB %s, backups in %s)",
            __version__,
            settings.host,
            settings.port,
            settings.redacted_uri,
            settings.backup_dir,
        )
        ready = asyncio.create_task(on_ready(sidecar)) if on_ready else None
        await stop.wait()
        if ready is not None and not ready.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ready
        clean = await sidecar.stop()
        log.info("stopped%s", "" if clean else " (the running job was cancelled)")
        return clean
    finally:
        with contextlib.suppress(Exception):
            for signum in _SIGNALS:
                asyncio.get_running_loop().remove_signal_handler(signum)
        await runner.cleanup()
