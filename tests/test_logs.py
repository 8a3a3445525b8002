"""Logging: JSON lines, daily files as the runbook greps them, 7-day removal, the tail, redaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import logging.handlers
import threading
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import clock
from sidecar.config import Settings, load_settings
from sidecar.logs import JOB_ID, DailyFileHandler, LogTail, Redactor, setup_logging, teardown_logging
from sidecar.service import BackupService, JobFailed

ADMIN = "admin-token-for-logs-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "SIDECAR_MONGODB_URI": "mongodb://backup:pa55word@db.example:27017/admin",
            "SIDECAR_BACKUP_DIR": str(tmp_path / "backups"),
            "SIDECAR_LOG_DIR": str(tmp_path / "logs"),
            "SIDECAR_ADMIN_TOKEN": ADMIN,
            "SIDECAR_TIMEZONE": "Asia/Seoul",
        }
    )


@pytest.fixture
def logged(settings: Settings) -> Iterator[tuple[io.StringIO, LogTail]]:
    stream = io.StringIO()
    tail = setup_logging(settings, stream=stream)
    try:
        yield stream, tail
    finally:
        teardown_logging()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def flush() -> None:
    """The files are written by a thread of their own: wait for it."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_json_lines_with_job_ids(logged: tuple[io.StringIO, LogTail]) -> None:
    stream, _ = logged
    log = logging.getLogger("sidecar.service")
    log.info("backup job abc started", extra={"job_id": "abc"})
    token = JOB_ID.set("ctx123")
    try:
        logging.getLogger("sidecar.engine").info("dumping maekcord.patients")
    finally:
        JOB_ID.reset(token)
    logging.getLogger("sidecar").info("no job here")
    first, second, third = lines(stream)
    assert first["jobId"] == "abc" and first["level"] == "INFO" and first["logger"] == "sidecar.service"
    assert second["jobId"] == "ctx123" and "jobId" not in third
    assert first["time"].endswith("Z") and len(first["time"]) == len("2024-12-01T02:00:00.000Z")


def test_daily_files_split_by_level(logged: tuple[io.StringIO, LogTail], settings: Settings) -> None:
    with clock.set_to(dt.datetime(2026, 12, 7, 14, 59, 59, tzinfo=dt.UTC)):  # 23:59:59 in Seoul
        logging.getLogger("sidecar.service").info("backup job x succeeded")
        logging.getLogger("sidecar.service").error("backup job y failed: disk full")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("sidecar.api").exception("handler crashed")
    flush()
    combined = settings.log_dir / "combined-2026-12-07.log"
    error = settings.log_dir / "error-2026-12-07.log"
    assert sorted(p.name for p in settings.log_dir.iterdir()) == [combined.name, error.name]
    all_lines = [json.loads(x) for x in combined.read_text().splitlines()]
    error_lines = [json.loads(x) for x in error.read_text().splitlines()]
    assert [x["message"] for x in all_lines] == [
        "backup job x succeeded",
        "backup job y failed: disk full",
        "handler crashed",
    ]
    assert [x["message"] for x in error_lines] == ["backup job y failed: disk full", "handler crashed"]
    assert "ValueError: boom" in error_lines[1]["exception"]
    # the runbook's: grep -i backup backend/logs/combined-*.log
    assert sum("backup" in x.lower() for x in combined.read_text().splitlines()) == 2


def test_files_older_than_retention_are_removed(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    combined = DailyFileHandler(directory, "combined", level=0, retention_days=7, timezone="UTC")
    error = DailyFileHandler(directory, "error", level=40, retention_days=7, timezone="UTC")
    today = dt.date(2024, 12, 20)
    for days in (0, 6, 7, 8, 30):
        day = (today - dt.timedelta(days=days)).isoformat()
        (directory / f"combined-{day}.log").write_text("{}\n")
        (directory / f"error-{day}.log").write_text("{}\n")
    (directory / "combined-notadate.log").write_text("keep\n")
    (directory / "other.log").write_text("keep\n")
    combined.cleanup(today)
    error.cleanup(today)
    left = sorted(p.name for p in directory.iterdir())
    assert left == sorted(
        [
            "combined-2024-12-20.log",
            "combined-2024-12-14.log",
            "combined-2024-12-13.log",
            "error-2024-12-20.log",
            "error-2024-12-14.log",
            "error-2024-12-13.log",
            "combined-notadate.log",
            "other.log",
        ]
    )
    combined.close()
    error.close()


def test_file_switches_at_local_midnight(tmp_path: Path) -> None:
    handler = DailyFileHandler(tmp_path, "combined", level=0, retention_days=7, timezone="Asia/Seoul")
    handler.setFormatter(logging.Formatter("%(message)s"))
    midnight = dt.datetime(2026, 12, 8, tzinfo=zoneinfo.ZoneInfo("Asia/Seoul"))
    before = midnight.timestamp() - 1
    for created, text in ((before, "late"), (before + 2, "early")):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, text, None, None)
        record.created = created
        handler.handle(record)
    handler.close()
    yesterday = (midnight.date() - dt.timedelta(days=1)).isoformat()
    assert (tmp_path / f"combined-{yesterday}.log").read_text() == "late\n"
    assert (tmp_path / f"combined-{midnight.date().isoformat()}.log").read_text() == "early\n"


def test_files_are_written_off_the_event_loop_and_teardown_writes_them_all(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D9: the loop only queues a formatted line; a thread of its own opens, writes and cleans up."""
    writers: set[threading.Thread] = set()
    emit = DailyFileHandler.emit

    def spied(self: DailyFileHandler, record: logging.LogRecord) -> None:
        writers.add(threading.current_thread())
        emit(self, record)

    monkeypatch.setattr(DailyFileHandler, "emit", spied)

    async def on_the_loop() -> list[logging.Handler]:
        for i in range(500):
            logging.getLogger("sidecar.service").error("backup job %d failed", i)
        return logging.getLogger().handlers

    setup_logging(settings, stream=io.StringIO())
    try:
        handlers = asyncio.run(on_the_loop())
        assert not [h for h in handlers if isinstance(h, DailyFileHandler)]
        assert [h for h in handlers if isinstance(h, logging.handlers.QueueHandler)]
    finally:
        teardown_logging()
    assert writers and threading.main_thread() not in writers
    for name in ("combined", "error"):
        (path,) = settings.log_dir.glob(f"{name}-*.log")
        messages = [json.loads(line)["message"] for line in path.read_text().splitlines()]
        assert messages == [f"backup job {i} failed" for i in range(500)]


def test_secrets_are_redacted_everywhere(logged: tuple[io.StringIO, LogTail], settings: Settings) -> None:
    stream, tail = logged
    log = logging.getLogger("sidecar.test")
    log.warning("token %s and uri %s", ADMIN, settings.mongodb_uri)
    log.warning("other uri mongodb+srv://u:p%%40ss@cluster/x and header Authorization: Bearer xyz.abc")
    try:
        raise RuntimeError(f"connect failed with {settings.mongodb_uri}")
    except RuntimeError:
        log.exception("failure")
    flush()
    texts = [stream.getvalue(), json.dumps(tail.query(limit=10))]
    texts += [p.read_text() for p in settings.log_dir.glob("*.log")]
    for text in texts:
        assert ADMIN not in text and "pa55word" not in text and "p%40ss" not in text and "xyz.abc" not in text
        assert "mongodb://backup:***@db.example:27017/admin" in text


def test_the_drill_servers_password_is_redacted(settings: Settings) -> None:
    """D8: the drill server's credentials show up in its connection errors like the main server's."""
    drill = settings.replace(drill_mongodb_uri="mongodb://drill:dr1ll%2Fpass@scratch:27017/admin")
    redact = Redactor.for_settings(drill)
    assert redact("auth failed for drill with dr1ll%2Fpass") == "auth failed for drill with ***"
    assert redact("decoded: dr1ll/pass") == "decoded: ***"
    assert redact("main: pa55word") == "main: ***"


def test_redactor_alone() -> None:
    redact = Redactor(["supersecretvalue"])
    assert redact("a supersecretvalue b") == "a *** b"
    assert redact("mongodb://me:pw@h/db") == "mongodb://me:***@h/db"
    assert redact("mongodb://h:27017/db") == "mongodb://h:27017/db"
    assert redact("bearer abc") == "bearer ***"


def test_tail_filters(logged: tuple[io.StringIO, LogTail]) -> None:
    _, tail = logged
    log = logging.getLogger("sidecar.t")
    middle = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
    with clock.set_to(middle - dt.timedelta(milliseconds=1)):
        log.info("one backup")
        log.warning("two restore")
    with clock.set_to(middle):
        log.error("three backup", extra={"job_id": "j3"})
        log.info("four")
    assert [r["message"] for r in tail.query()] == ["one backup", "two restore", "three backup", "four"]
    assert [r["message"] for r in tail.query(level="WARNING")] == ["two restore", "three backup"]
    assert [r["message"] for r in tail.query(since=middle)] == ["three backup", "four"]
    assert [r["message"] for r in tail.query(limit=2)] == ["three backup", "four"]
    assert [r["message"] for r in tail.query(text="BACKUP")] == ["one backup", "three backup"]
    assert [r["message"] for r in tail.query(job_id="j3")] == ["three backup"]


def test_tail_is_bounded() -> None:
    tail = LogTail(Redactor(), capacity=10)
    log = logging.getLogger("sidecar.bounded")
    log.addHandler(tail)
    log.setLevel(logging.INFO)
    try:
        for i in range(25):
            log.info("n%d", i)
    finally:
        log.removeHandler(tail)
    assert [r["message"] for r in tail.query(limit=100)] == [f"n{i}" for i in range(15, 25)]


def test_setup_twice_replaces_handlers(settings: Settings) -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging(settings, stream=first)
    setup_logging(settings, stream=second)
    try:
        logging.getLogger("sidecar").warning("once")
    finally:
        teardown_logging()
    assert first.getvalue() == "" and second.getvalue().count("once") == 1


def test_refused_and_dry_run_restores_stay_out_of_the_error_log(make_settings, sample_counts) -> None:
    settings = make_settings(database="maekcord", verify_after_backup="off", connect_timeout_seconds=1)
    setup_logging(settings, stream=io.StringIO())
    try:
        service = BackupService(settings)
        entry = service.run_backup(service.new_job("backup", "manual"))
        with pytest.raises(JobFailed, match="matches the given filters; nothing was written"):
            service.run_restore(file_name=entry["fileName"], ns_include=["maekcord.nosuch"])  # a typo
        with pytest.raises(JobFailed, match="Nothing was written"):
            service.run_restore(file_name=entry["fileName"])  # onto the live data, no --drop: refused
        service.run_restore(file_name=entry["fileName"], dry_run=True)
        down = BackupService(make_settings(mongodb_uri="mongodb://127.0.0.1:9/", connect_timeout_seconds=1))
        with pytest.raises(JobFailed):
            down.run_backup(down.new_job("backup", "manual"))  # a failed job: ERROR, as before
    finally:
        teardown_logging()
    read = [
        json.loads(x) for p in settings.log_dir.glob("combined-*.log") for x in p.read_text().splitlines()
    ]
    errors = [json.loads(x) for p in settings.log_dir.glob("error-*.log") for x in p.read_text().splitlines()]
    restores = [r for r in read if r["message"].startswith("restore job ") and " failed: " in r["message"]]
    assert [r["level"] for r in restores] == ["WARNING", "WARNING"]
    assert "no namespace of" in restores[0]["message"] and "Nothing was written" in restores[1]["message"]
    assert any(r["message"].startswith("restore job ") and r["message"].endswith(" succeeded") for r in read)
    assert [e["message"].split(" ")[0] for e in errors if " job " in e["message"]] == ["backup"]
    assert not [e for e in errors if "restore" in e["message"]]


def _read_all(settings: Settings, kind: str) -> list[str]:
    return [line for p in settings.log_dir.glob(f"{kind}-*.log") for line in p.read_text().splitlines()]
