"""The failure of an integrity check, and the levels that can fail."""

from __future__ import annotations

from typing import Any

import pymongo

from sidecar.engine.restore_errors import RestoreError, error_text
from sidecar.store.catalog import ARCHIVE_LEVELS, LEVELS

__all__ = ["ARCHIVE_LEVELS", "LEVELS", "SERVER_CHECK", "VerifyFailed", "first_problem"]

# A drill that could not reach or lost its server proved nothing either way about the archive.
SERVER_CHECK = "drill-server"


class VerifyFailed(Exception):
    """An integrity check failed. ``check`` is file, gzip, archive, manifest, drill, or SERVER_CHECK
    when the drill's server failed rather than the archive."""

    def __init__(
        self,
        reason: str,
        *,
        check: str,
        offset: int | None = None,
        namespace: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.check = check
        self.offset = offset
        self.namespace = namespace
        self.details = details or {}

    def as_json(self) -> dict[str, Any]:
        """The failure's fields for ``checks.record``, which leaves out those that are None."""
        return {"failedCheck": self.check, "offset": self.offset, "namespace": self.namespace, **self.details}


def first_problem(problems: list[str]) -> str:
    """The first of several problems, saying how many more there are."""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


# What a proof's restore or replay raises when it fails, beside VerifyFailed.
PROOF_ERRORS = (RestoreError, pymongo.errors.PyMongoError)


def server_or_data(exc: BaseException, doing: str, check: str) -> VerifyFailed:
    """A proof's failed restore or replay (one of PROOF_ERRORS) as the server's failure (its
    connection lost: SERVER_CHECK, which proves nothing about the data) or the data's (``check``).
    The engine's error wraps the driver's, hence the look at its context."""
    lost = any(isinstance(e, pymongo.errors.ConnectionFailure) for e in (exc, exc.__context__))
    return VerifyFailed(
        f"{doing} into the scratch databases failed: {error_text(exc)}", check=SERVER_CHECK if lost else check
    )
