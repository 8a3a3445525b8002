"""Every error the API returns is JSON: ``{"error": {"code": ..., "message": ...}}``, never a traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("sidecar.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors (routing, body size, ...) mapped to our codes.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    431: "headers_too_large",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine code, a message naming the problem."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": {"code": code, "message": message, **extra}}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if _missing_static_file(request):  # aiohttp would answer an empty octet-stream 404
            raise ApiError(404, "not_found", f"no such file: {request.path} (see /api-docs)")
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        message = _http_message(request, exc)
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message, headers)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(
            500, "internal_error", "unexpected error; the sidecar's error log has the details"
        )


def _missing_static_file(request: web.Request) -> bool:
    """A request routed to a static directory (the Swagger UI assets) for a file that is not in it."""
    resource = request.match_info.route.resource
    if not isinstance(resource, web.StaticResource):
        return False
    directory = Path(resource.get_info()["directory"]).resolve()
    path = (directory / request.match_info.get("filename", "")).resolve()
    return not (path.is_file() and path.is_relative_to(directory))


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"no such endpoint: {request.path} (see /api-docs)"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.status == 413:
        return f"request body too large: {exc.text or ''}".strip()
    return exc.text or exc.reason
