"""The one way the sidecar makes a MongoClient: one timeout for server selection and for each
connection, the sidecar's app name (with the role, so ``currentOp`` tells a proof from a backup), and
connection failures described by host list only, never with the URI's password.
"""

from __future__ import annotations

import pymongo
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from sidecar.config import uri_hosts

APP_NAME = "mongo-backup-sidecar"
AUTH_FAILED = (18, 13)  # AuthenticationFailed, Unauthorized


class ConnectFailed(Exception):
    """The server did not answer a ping; the message names its hosts, never a password."""


def mongo_client(uri: str, timeout: float, role: str = "") -> pymongo.MongoClient:
    """A client (not yet connected: pymongo connects on first use) whose waits last ``timeout`` s."""
    ms = int(timeout * 1000)
    return pymongo.MongoClient(
        uri,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        appname=f"{APP_NAME}-{role}" if role else APP_NAME,
    )


def connected(uri: str, timeout: float, role: str = "") -> pymongo.MongoClient:
    """A client that has answered a ping, or ConnectFailed saying why."""
    try:
        client = mongo_client(uri, timeout, role)
        client.admin.command("ping")
    except OperationFailure as exc:
        reason = (
            "authentication failed"
            if exc.code in AUTH_FAILED
            else f"server refused: {exc.details.get('errmsg')}"
        )
        raise ConnectFailed(f"cannot use MongoDB at {uri_hosts(uri)}: {reason}") from None
    except (ConfigurationError, PyMongoError) as exc:
        detail = f"no answer within {timeout:g}s" if "Timeout" in type(exc).__name__ else str(exc)
        raise ConnectFailed(f"cannot reach MongoDB at {uri_hosts(uri)}: {detail}") from None
    return client
