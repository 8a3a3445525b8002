"""``sidecar demo``: the whole sidecar on this machine in one command, nothing to set up.

With no ``SIDECAR_MONGODB_URI``, it starts the embedded MongoDB-compatible server with its data in
``./var/demo/mongo`` (kept and reused on the next run) and loads the sample data once. Then it starts the
sidecar (API, scheduler, metrics) with generated tokens written to ``./var/demo/admin-token`` and
``./var/demo/read-token`` (mode 0600; the paths are printed, never the tokens), takes a first backup
through the same job path as the API, and prints where to look: the URLs, a read and an admin curl
call, and the ``export SIDECAR_...`` lines that point ``sidecar list/verify/restore`` in a second
terminal at the same MongoDB and backups. The embedded server keeps its port across runs while it is
free, so those lines stay good. Ctrl-C stops everything.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from sidecar.api.app import Sidecar, run_service
from sidecar.config import Settings, load_settings
from sidecar.embedded import EmbeddedServer
from sidecar.engine.client import mongo_client
from sidecar.jobs import JobBusy
from sidecar.logs import setup_logging
from sidecar.sampledata import load_sample_data
from sidecar.scheduler import ShuttingDown
from sidecar.service import JobFailed
from sidecar.text import counted

SAMPLE_MARKER = "sample-data-loaded"


def token_file(path: Path) -> Path:
    """A random token in ``path`` (mode 0600), kept across runs."""
    if path.exists():
        os.chmod(path, 0o600)
        if len(path.read_text(encoding="utf-8").strip()) >= 16:
            return path
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def _show(path: Path) -> str:
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def _sidecar_command() -> str:
    """How another terminal runs this sidecar: ``sidecar`` when on PATH, else this venv's."""
    if shutil.which("sidecar"):
        return "sidecar"
    beside = Path(sys.executable).with_name("sidecar")
    return shlex.quote(str(beside)) if beside.exists() else f"{shlex.quote(sys.executable)} -m sidecar"


def cli_exports(settings: Settings, admin: Path, read: Path, *, embedded: bool) -> list[str]:
    """The shell lines that make ``sidecar list/verify/restore`` in another terminal use this demo."""
    values = {
        "SIDECAR_BACKUP_DIR": settings.backup_dir.absolute(),
        "SIDECAR_LOG_DIR": settings.log_dir.absolute(),
        "SIDECAR_ADMIN_TOKEN_FILE": admin,
        "SIDECAR_READ_TOKEN_FILE": read,
    }
    lines = [f"export {name}={shlex.quote(str(value))}" for name, value in values.items()]
    if embedded:
        return [f"export SIDECAR_MONGODB_URI={shlex.quote(settings.mongodb_uri)}", *lines]
    return ["# SIDECAR_MONGODB_URI: keep the one this demo was started with", *lines]


def run_demo(directory: Path, environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    env = dict(os.environ if environ is None else environ)
    directory = directory.absolute()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    admin, read = token_file(directory / "admin-token"), token_file(directory / "read-token")
    for name in ("SIDECAR_ADMIN_TOKEN", "SIDECAR_READ_TOKEN"):
        env.pop(name, None)
    env["SIDECAR_ADMIN_TOKEN_FILE"], env["SIDECAR_READ_TOKEN_FILE"] = str(admin), str(read)
    env.setdefault("SIDECAR_BACKUP_DIR", str(directory / "backups"))
    env.setdefault("SIDECAR_LOG_DIR", str(directory / "logs"))
    server: EmbeddedServer | None = None
    try:
        if not env.get("SIDECAR_MONGODB_URI"):
            data = directory / "mongo"
            verb = "reusing" if data.exists() else "starting"
            say(f"{verb} the embedded MongoDB-compatible server in {_show(data)} ...")
            server = EmbeddedServer(data, log_path=directory / "mongo.log").start()
            env["SIDECAR_MONGODB_URI"] = server.uri
            marker = directory / SAMPLE_MARKER
            if not marker.exists():
                say("loading the sample data (databases maekcord, maekcord_files, analytics) ...")
                with mongo_client(server.uri, 10, "demo") as client:
                    counts = load_sample_data(client)
                marker.write_text(counted(sum(counts.values()), "document") + "\n", encoding="utf-8")
        settings = load_settings(env)
        tail = setup_logging(settings, console_level="WARNING")
        base = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '') else settings.host}:{settings.port}"

        async def first_backup(sidecar: Sidecar) -> None:
            say("taking a first backup ...")
            try:
                _, task = await sidecar.runner.submit("backup", "manual", sidecar.service.run_backup)
                entry = await asyncio.shield(task)
                say(f"first backup completed: {entry['fileName']} ({entry['fileSize']})")
            except (JobBusy, JobFailed, ShuttingDown) as exc:
                say(f"first backup did not complete: {exc}")
            say()
            say("mongo-backup-sidecar demo is running:")
            say(f"  API docs (Swagger UI)  {base}/api-docs")
            say(f"  Prometheus metrics     {base}/metrics")
            say(f"  health                 {base}/health")
            say(f"  backup status          {base}/api/backup/status  (needs a token)")
            say(f"  MongoDB                {settings.redacted_uri}")
            say(f"  tokens (mode 0600)     admin: {_show(admin)}  read: {_show(read)}")
            say(f"  backups in {_show(settings.backup_dir)}, logs in {_show(settings.log_dir)}")
            say()
            say("try (read token):")
            say(f'  curl -H "Authorization: Bearer $(cat {_show(read)})" {base}/api/backup/status')
            say("and a backup now (admin token):")
            say(
                f'  curl -X POST -H "Authorization: Bearer $(cat {_show(admin)})" '
                f"'{base}/api/backup/create?wait=true'"
            )
            say()
            say("the CLI on this demo, in another terminal:")
            for line in cli_exports(settings, admin, read, embedded=server is not None):
                say(f"  {line}")
            cmd = _sidecar_command()
            say(f"  {cmd} list; {cmd} verify --latest; {cmd} restore --latest --dry-run")
            say()
            say("press Ctrl-C to stop")

        asyncio.run(run_service(settings, log_tail=tail, on_ready=first_backup))
        say("demo stopped")
        return 0
    finally:
        if server is not None:
            server.stop()
