"""Bearer-token auth: read role for queries, admin role for jobs; constant-time comparison.

``/health``, ``/metrics`` (unless ``SIDECAR_METRICS_REQUIRE_TOKEN``), the API docs and the OpenAPI
document are open. A missing or wrong token is 401, a read token on an admin route 403. The token
itself is never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

from aiohttp import web

from sidecar.api.errors import ApiError, Handler
from sidecar.config import Settings

OPEN, READ, ADMIN = "open", "read", "admin"
ROLE_ATTR = "_sidecar_role"
F = TypeVar("F", bound=Callable)


class Role(IntEnum):
    NONE = 0
    READ = 1
    ADMIN = 2


def requires(role: str) -> Callable[[F], F]:
    """Mark a handler with the role it needs (``open``, ``read`` or ``admin``)."""

    def mark(handler: F) -> F:
        setattr(handler, ROLE_ATTR, role)
        return handler

    return mark


def _unauthorized(code: str, message: str, error: str) -> ApiError:
    """A 401 with the Bearer challenge; ``error`` is RFC 6750's invalid_request or invalid_token."""
    challenge = f'Bearer realm="mongo-backup-sidecar", error="{error}"'
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


class TokenAuth:
    def __init__(self, settings: Settings):
        self.admin = settings.admin_token.encode()
        self.read = settings.read_token.encode()
        self.metrics_require_token = settings.metrics_require_token

    def role_of(self, presented: str) -> Role:
        """Compare against every configured token, each in constant time."""
        given = presented.encode()
        is_admin = bool(self.admin) and hmac.compare_digest(given, self.admin)
        is_read = bool(self.read) and hmac.compare_digest(given, self.read)
        return Role.ADMIN if is_admin else Role.READ if is_read else Role.NONE

    def required(self, request: web.Request) -> str:
        route = request.match_info.route
        role = getattr(route.handler, ROLE_ATTR, None)
        if role is None:  # routing errors (404/405) and anything unmarked: let the router answer
            return OPEN
        if role == "metrics":
            return READ if self.metrics_require_token else OPEN
        return role

    def check(self, request: web.Request) -> None:
        needed = self.required(request)
        if needed == OPEN:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if not header:
            message = "missing bearer token: send 'Authorization: Bearer <token>'"
            raise _unauthorized("unauthorized", message, "invalid_request")
        if scheme.lower() != "bearer" or not credentials.strip():
            message = "the Authorization header must be 'Bearer <token>'"
            raise _unauthorized("unauthorized", message, "invalid_request")
        role = self.role_of(credentials.strip())
        if role == Role.NONE:
            raise _unauthorized("invalid_token", "the bearer token is not valid", "invalid_token")
        if needed == ADMIN and role < Role.ADMIN:
            raise ApiError(403, "forbidden", "this endpoint needs the admin token; the read token was given")

    def middleware(self) -> Callable[[web.Request, Handler], object]:
        @web.middleware
        async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.check(request)
            return await handler(request)

        return auth_middleware
