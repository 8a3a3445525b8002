"""What every job of the service shares: the failure type, the listener protocol, the connection."""

from __future__ import annotations

import errno
import hashlib
import logging
from typing import BinaryIO, Protocol

import pymongo
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

from sidecar.config import Settings, uri_hosts
from sidecar.engine.dump import DumpError
from sidecar.jobs import Job

log = logging.getLogger("sidecar.service")


class JobFailed(RuntimeError):
    """A job failed; ``stage`` is one of connect, dump, write, verify, upload (for metrics)."""

    def __init__(self, message: str, stage: str):
        super().__init__(message)
        self.stage = stage


class JobListener(Protocol):
    def job_started(self, job: Job) -> None: ...

    def job_finished(self, job: Job) -> None: ...


class HashingWriter:
    """Counts and hashes the compressed bytes on their way to the file."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def connect(settings: Settings) -> pymongo.MongoClient:
    """A client that has answered a ping, or JobFailed(stage=connect) naming the host, never the password."""
    timeout_ms = int(settings.connect_timeout_seconds * 1000)
    try:
        client = pymongo.MongoClient(
            settings.mongodb_uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            appname="mongo-backup-sidecar",
        )
        client.admin.command("ping")
        return client
    except OperationFailure as exc:
        reason = (
            "authentication failed"
            if exc.code in (18, 13)
            else f"server refused: {exc.details.get('errmsg')}"
        )
        raise JobFailed(
            f"cannot use MongoDB at {uri_hosts(settings.mongodb_uri)}: {reason}", "connect"
        ) from None
    except (ConfigurationError, PyMongoError) as exc:
        detail = (
            f"no answer within {settings.connect_timeout_seconds:g}s"
            if "Timeout" in type(exc).__name__
            else str(exc)
        )
        raise JobFailed(
            f"cannot reach MongoDB at {uri_hosts(settings.mongodb_uri)}: {detail}", "connect"
        ) from None


def as_failure(exc: BaseException, stage: str, name: str) -> JobFailed:
    if isinstance(exc, JobFailed):
        return exc
    if isinstance(exc, DumpError):
        return JobFailed(str(exc), exc.stage)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return JobFailed(
            f"disk full while writing {name}; the partial file was removed, older archives are intact "
            f"(free space: df -h, or run sidecar prune)",
            "write",
        )
    if isinstance(exc, OSError):
        return JobFailed(f"cannot write {name}: {exc.strerror or exc}", "write")
    if isinstance(exc, PyMongoError):
        return JobFailed(f"MongoDB error during {stage}: {exc}", "dump" if stage == "write" else stage)
    return JobFailed(f"{type(exc).__name__}: {exc}", stage)
