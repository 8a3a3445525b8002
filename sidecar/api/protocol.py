"""The HTTP server under the app, for requests aiohttp cannot parse (a request line or a header over
8190 bytes, bad syntax): they get the API's JSON error, with nothing of the request echoed (aiohttp's
own answer is text/plain quoting the first bytes of the line, a bearer token included), and a
WARNING without traceback at most once a minute however many arrive, instead of an ERROR with a
traceback each.

``ApiRunner`` is ``web.AppRunner`` whose connections are ``JsonErrorHandler``s; ``sidecar serve`` uses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from sidecar.api.errors import error_response

log = logging.getLogger("sidecar.api")

WARN_EVERY_SECONDS = 60.0


class RateLimitedWarning:
    """One WARNING per ``interval`` seconds; the next one says how many were not logged meanwhile."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = WARN_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger, self.interval, self.clock = logger, interval, clock
        self.last: float | None = None
        self.unlogged = 0

    def warn(self, message: str) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            self.unlogged += 1
            return
        more = f" ({self.unlogged} more like it not logged since the last warning)" if self.unlogged else ""
        self.logger.warning("%s%s", message, more)
        self.last, self.unlogged = now, 0


UNPARSABLE = RateLimitedWarning(log)


def describe(exc: BaseException | None) -> tuple[str, str]:
    """The error code and message for a request that could not be parsed; never a byte of the request."""
    if isinstance(exc, LineTooLong):
        return (
            "request_too_large",
            "the request line or a header is longer than 8190 bytes; the request was not read",
        )
    return "bad_request", "the request is not valid HTTP/1.1; it was not read"


class JsonErrorHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage):  # a failure of ours, not the request's
            super().handle_error(request, status, exc, message)  # logged with its traceback, as before
            response = error_response(
                status, "internal_error", "unexpected error; see the sidecar's error log"
            )
        else:
            if request.writer.output_size > 0:
                raise ConnectionError("the response has started; cannot send the error")
            code, text = describe(exc)
            UNPARSABLE.warn(f"refused an unparsable request from {request.remote}: {text} ({code})")
            response = error_response(status, code, text)
        response.force_close()
        return response


class ApiServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` serving the app through ``ApiServer``: JSON errors for unparsable requests."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return ApiServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            **made._kwargs,
        )
