"""Logging: JSON lines to stdout, daily files the runbook greps, and an in-memory tail for the API.

Files are ``combined-YYYY-MM-DD.log`` (every record) and ``error-YYYY-MM-DD.log`` (ERROR and above)
under ``SIDECAR_LOG_DIR``, dated in ``SIDECAR_TIMEZONE`` by the one clock (sidecar/clock.py), removed
after ``SIDECAR_LOG_RETENTION_DAYS`` (7 by default), so ``tail -f logs/combined-*.log`` and ``grep -i
backup logs/combined-*.log`` work as the runbook says. A thread of their own writes them
(``FileQueue``), never the event loop; records still queued at exit are written by ``teardown_logging``
or ``logging.shutdown``. Every line carries the job id when it was logged on behalf of a job. Tokens and
the MongoDB passwords (of the backed-up server and of the drill server) are replaced by ``***`` before a
record reaches any handler's output.
"""

from __future__ import annotations

import collections
import contextvars
import datetime as dt
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import zoneinfo
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from sidecar import clock
from sidecar.config import Settings
from sidecar.text import iso_utc

# The job on whose behalf the current code runs. ``asyncio.to_thread`` copies the context into the
# worker thread, so records logged by a job's thread carry its id without being passed it.
JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sidecar_job_id", default=None)

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_URI_PASSWORD = re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]+):([^@\s]*)@")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_FILE_DATE = re.compile(r"^(combined|error)-(\d{4}-\d{2}-\d{2})\.log$")
_installed: list[logging.Handler] = []


class Redactor:
    """Replaces known secrets, URI passwords and bearer credentials with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        secrets = [settings.admin_token, settings.read_token]
        for uri in (settings.mongodb_uri, settings.drill_mongodb_uri):
            password = urlsplit(uri).password if "@" in uri else None
            if password:
                secrets += [password, unquote(password)]
        return cls(s for s in secrets if len(s) >= 4)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        text = _URI_PASSWORD.sub(r"\1:***@", text)
        return _BEARER.sub(r"\1***", text)


def record_dict(record: logging.LogRecord, redact: Redactor) -> dict[str, Any]:
    """The JSON shape of one record, shared by stdout, the files and the tail."""
    data: dict[str, Any] = {
        "time": iso_utc(dt.datetime.fromtimestamp(record.created, dt.UTC)),
        "level": record.levelname,
        "logger": record.name,
        "message": redact(record.getMessage()),
    }
    job_id = getattr(record, "job_id", None) or getattr(record, "_ctx_job_id", None)
    if job_id:
        data["jobId"] = job_id
    if record.exc_info and record.exc_info[0] is not None:
        data["exception"] = redact(logging.Formatter().formatException(record.exc_info))
    return data


class _ContextFilter(logging.Filter):
    """Stamps each record (before any handler runs) with the job id of the context it was logged in
    and with the one clock's time, which dates its line and picks its daily file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "_ctx_job_id"):
            record._ctx_job_id = JOB_ID.get()
            record.created = clock.timestamp()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(record_dict(record, self.redact), ensure_ascii=False)


class DailyFileHandler(logging.Handler):
    """Appends to ``{name}-{YYYY-MM-DD}.log``, switching files at local midnight and dropping old ones."""

    def __init__(self, directory: Path, name: str, *, level: int, retention_days: int, timezone: str) -> None:
        super().__init__(level)
        self.directory, self.name_prefix = Path(directory), name
        self.retention_days = retention_days
        self.tz = zoneinfo.ZoneInfo(timezone)
        self._date: str | None = None
        self._stream: TextIO | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cleanup()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            day = dt.datetime.fromtimestamp(record.created, self.tz).date().isoformat()
            with self.lock:  # type: ignore[union-attr]
                if day != self._date or self._stream is None:
                    if self._stream is not None:
                        self._stream.close()
                    path = self.directory / f"{self.name_prefix}-{day}.log"
                    self._stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
                    self._date = day
                    self.cleanup()
                self._stream.write(line + "\n")
                self._stream.flush()
        except Exception:
            self.handleError(record)

    def cleanup(self, today: dt.date | None = None) -> list[Path]:
        """Remove this handler's files dated more than ``retention_days`` before today."""
        today = today or clock.now().astimezone(self.tz).date()
        cutoff = today - dt.timedelta(days=self.retention_days)
        removed = []
        for path in self.directory.glob(f"{self.name_prefix}-*.log"):
            match = _FILE_DATE.match(path.name)
            if not match or match.group(1) != self.name_prefix:
                continue
            try:
                day = dt.date.fromisoformat(match.group(2))
            except ValueError:
                continue
            if day < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        super().close()


class FileQueue(logging.handlers.QueueHandler):
    """Formats on the caller's thread (the event loop, often) and hands the line to a thread that owns
    the file handlers, so opening, writing, flushing and the midnight cleanup never block the loop.
    ``flush`` waits until every line queued so far is written; ``close`` drains, then closes the files.
    """

    def __init__(self, handlers: Iterable[logging.Handler], redact: Redactor) -> None:
        super().__init__(queue.Queue())
        self.setFormatter(JsonFormatter(redact))
        self.listener: logging.handlers.QueueListener | None = logging.handlers.QueueListener(
            self.queue, *handlers, respect_handler_level=True
        )
        self.listener.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The finished JSON line with the level and time the file handlers choose by; nothing else."""
        line = self.format(record)
        return logging.makeLogRecord({"msg": line, "levelno": record.levelno, "created": record.created})

    def flush(self) -> None:
        if self.listener is not None:
            self.queue.join()  # type: ignore[attr-defined]

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            listener, self.listener = self.listener, None
        if listener is not None:
            listener.stop()
            for handler in listener.handlers:
                handler.close()
        super().close()


class LogTail(logging.Handler):
    """The newest records in memory, for ``GET /api/v1/monitoring/logs``."""

    def __init__(self, redact: Redactor, capacity: int = 5000):
        super().__init__(logging.DEBUG)
        self.redact = redact
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = record_dict(record, self.redact)
            data["_created"] = record.created
            data["_levelno"] = record.levelno
            with self._mutex:
                self.records.append(data)
        except Exception:
            self.handleError(record)

    def query(
        self,
        *,
        level: str | None = None,
        since: dt.datetime | None = None,
        limit: int = 100,
        text: str | None = None,
        job_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` records matching every filter, oldest first (like ``tail``)."""
        minimum = logging.getLevelName(level) if level else logging.NOTSET
        after = since.timestamp() if since else None
        needle = text.lower() if text else None
        with self._mutex:
            snapshot = list(self.records)
        found: list[dict[str, Any]] = []
        for data in reversed(snapshot):
            if len(found) >= limit:
                break
            if data["_levelno"] < minimum or (after is not None and data["_created"] < after):
                continue
            if job_id and data.get("jobId") != job_id:
                continue
            if needle and needle not in data["message"].lower() and needle not in data["logger"].lower():
                continue
            found.append({k: v for k, v in data.items() if not k.startswith("_")})
        found.reverse()
        return found


def setup_logging(
    settings: Settings,
    *,
    stream: TextIO | None = None,
    files: bool = True,
    console_level: str | None = None,
    console: bool = True,
) -> LogTail:
    """Install the stdout, file and tail handlers on the root logger (replacing ours from a prior call)."""
    redact = Redactor.for_settings(settings)
    teardown_logging()
    root = logging.getLogger()
    context = _ContextFilter()
    tail = LogTail(redact)
    handlers: list[logging.Handler] = [tail]
    if console:
        to_console = logging.StreamHandler(stream or sys.stdout)
        to_console.setFormatter(JsonFormatter(redact))
        if console_level:
            to_console.setLevel(console_level)
        handlers.append(to_console)
    if files:
        common = {"retention_days": settings.log_retention_days, "timezone": settings.timezone}
        daily = [
            DailyFileHandler(settings.log_dir, name, level=level, **common)
            for name, level in (("combined", logging.DEBUG), ("error", logging.ERROR))
        ]
        handlers.append(FileQueue(daily, redact))
    for handler in handlers:
        handler.addFilter(context)
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(settings.log_level)
    # Chatty libraries: their routine INFO lines would drown the job records.
    for name in ("apscheduler", "aiohttp.access", "pymongo"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return tail


def teardown_logging() -> None:
    """Remove our handlers, writing out every queued line first (``logging.shutdown`` does the same at
    exit, so a one-shot command that never calls this loses nothing either)."""
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()
