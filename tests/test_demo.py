"""The README's first command, `sidecar demo`, from a fresh clone of the repository.

Runs with this venv's Python (nothing reinstalled) on the clone's code: starts the embedded server,
loads the sample data, serves the API, takes a first backup, prints the URLs and token file paths;
/metrics then carries the successful backup's timestamp. Ctrl-C stops everything; a second run
reuses the data.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.embedded import free_port

REPO = Path(__file__).resolve().parents[1]


class Demo:
    def __init__(self, clone: Path, port: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        env.update(PYTHONPATH=str(clone), SIDECAR_PORT=str(port), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "demo"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError("demo exited:\n" + "".join(self.output))
            self.output.append(line)
            if text in line:
                return "".join(self.output)
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n" + "".join(self.output)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert self.process.wait(60) == 0, "".join(self.output)
        while (line := self.lines.get(timeout=10)) is not None:
            self.output.append(line)
        return "".join(self.output)


def get(url: str, token: str | None = None) -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def post(url: str, token: str) -> bytes:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def second_terminal(clone: Path, exports: list[str], command: str) -> str:
    """``command`` in a fresh shell that ran the demo's export lines, with this venv's ``sidecar``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(PYTHONPATH=str(clone), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    script = "\n".join([*exports, command])
    done = subprocess.run(
        ["bash", "-c", script], cwd="/", env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


def mongodb_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith("MongoDB "))


def processes_under(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone)}
    where = subprocess.run(
        [sys.executable, "-c", "import sidecar; print(sidecar.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(clone / "sidecar" / "__init__.py")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = Demo(clone, port)
    try:
        output = demo.wait_for("press Ctrl-C to stop", timeout=240)
        assert "loading the sample data" in output and "first backup completed: maekcord-backup-" in output
        for url in (f"{base}/api-docs", f"{base}/metrics", f"{base}/api/backup/status"):
            assert url in output

        tokens = {name: clone / "var" / "demo" / f"{name}-token" for name in ("admin", "read")}
        for path in tokens.values():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert str(path.relative_to(clone)) in output and path.read_text().strip() not in output

        families = text_string_to_metric_families(get(f"{base}/metrics").decode())
        samples = {s.name: s.value for f in families for s in f.samples}
        last_success = samples["mongobackup_backup_last_success_timestamp_seconds"]
        assert time.time() - 600 < last_success <= time.time()
        status = json.loads(get(f"{base}/api/backup/status", tokens["read"].read_text().strip()))
        assert status["lastSuccessfulBackup"]["status"] == "completed"
        first_backup = status["lastSuccessfulBackup"]["fileName"]
        assert 'curl -X POST -H "Authorization: Bearer $(cat var/demo/admin-token)" ' in output
        created = json.loads(
            post(f"{base}/api/backup/create?wait=true", tokens["admin"].read_text().strip())
        )  # the admin example
        assert created["backup"]["status"] == "completed"
        # the printed export block makes the CLI in another terminal use the demo's server and backups
        exports = [line.strip() for line in output.splitlines() if line.strip().startswith("export SIDECAR_")]
        assert {e.split("=", 1)[0] for e in exports} == {
            f"export SIDECAR_{name}"
            for name in ("MONGODB_URI", "BACKUP_DIR", "LOG_DIR", "ADMIN_TOKEN_FILE", "READ_TOKEN_FILE")
        }
        listing = second_terminal(clone, exports, "sidecar list")
        assert first_backup in listing and created["backup"]["fileName"] in listing
        assert "quick verification passed" in second_terminal(clone, exports, "sidecar verify --level quick")
        dry_run = second_terminal(
            clone, exports, "sidecar restore --latest --dry-run --ns-include maekcord.sessions"
        )
        assert "nothing was written" in dry_run
        assert json.loads(get(f"{base}/health"))["status"] == "ok"
        assert get(f"{base}/api-docs").startswith(b"<!DOCTYPE html>")
    finally:
        output = demo.stop() if demo.process.poll() is None else "".join(demo.output)
    assert output.rstrip().endswith("demo stopped")
    assert not processes_under(clone), "the embedded server outlived the demo"

    # Run again: the data directory is reused, the sample data not loaded twice, the same MongoDB port.
    demo = Demo(clone, port)
    try:
        again = demo.wait_for("press Ctrl-C to stop", timeout=240)
        assert "reusing the embedded MongoDB-compatible server" in again
        assert "loading the sample data" not in again
        assert mongodb_line(again) == mongodb_line(output)
    finally:
        if demo.process.poll() is None:
            demo.stop()
    catalog = json.loads((clone / "var" / "demo" / "backups" / "backup-info.json").read_text())
    assert [e["status"] for e in catalog] == ["completed"] * 3
    assert not processes_under(clone)
