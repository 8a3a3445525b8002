"""Real Prometheus, Alertmanager, Pushgateway and ``sidecar serve`` processes for end-to-end tests.

Each server runs from Debian's packages (``prometheus``, ``prometheus-alertmanager``,
``prometheus-pushgateway``) on a free 127.0.0.1 port, with a generated configuration and its data in a
temporary directory; ``start`` returns once the server answers its readiness endpoint and ``stop``
ends it (SIGTERM, then SIGKILL). Nothing here is mocked: the tests talk to the servers over HTTP.

A missing binary fails loudly, as in tests/test_alert_rules.py: CI installs all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pymongo
import pytest
import yaml

from sidecar.embedded import EmbeddedServer, free_port
from tests.helpers import discard

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "mongobackup.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "alerts" / "alertmanager.yml"
SHIPPED_WEBHOOK_BASE = "http://127.0.0.1:9095"  # the receivers' host in alerts/alertmanager.yml


def binary(name: str) -> str:
    return shutil.which(name) or name  # a missing one fails at Popen with its name


# -- HTTP helpers ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: Any = None,
    timeout: float = 60.0,
) -> Reply:
    """One request; 4xx/5xx answers are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read(), dict(response.headers), time.perf_counter() - t0)
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), dict(exc.headers), time.perf_counter() - t0)


def wait_until(
    what: str,
    probe: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.25,
    describe: Callable[[], str] | None = None,
) -> Any:
    """Poll ``probe`` until it returns something truthy; its last value or exception goes in the error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
            if last:
                return last
        except (OSError, ValueError, KeyError) as exc:  # not up yet, or not the answer yet
            last = exc
        if time.monotonic() > deadline:
            extra = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}{extra}")
        time.sleep(interval)


# -- processes -------------------------------------------------------------------------------------


@dataclass
class Server:
    """A child process with its log file; ``url`` is where it answers."""

    name: str
    argv: list[str]
    workdir: Path
    port: int
    ready_path: str = "/-/ready"
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return f"--- last lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])
        return f"(no log at {self.log_path})"

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of pytest does not hit it before stop() does
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")
            return http("GET", self.url + self.ready_path, timeout=2).status == 200

        try:
            wait_until(f"{self.name} to be ready at {self.url}", ready, timeout, describe=self.log_tail)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- Prometheus ------------------------------------------------------------------------------------


def fast_rules(source: Path, target: Path, for_: str = "1s") -> Path:
    """A copy of the rule file with every ``for:`` set to ``for_``.

    The shipped rules wait minutes (MongoBackupMongoDBDown: 2m) before firing; a test cannot. Only the
    hold time changes: expressions, labels and annotations are the shipped ones.
    """
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    target.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


@dataclass
class Prometheus(Server):
    def query(self, expr: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (status, data) for ``expr`` at the current time."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        reply = http("GET", url, timeout=30)
        answer = reply.json()
        if reply.status != 200 and "status" not in answer:
            raise AssertionError(f"query {expr!r} answered {reply.status}: {reply.text[:500]}")
        return answer

    def vector(self, expr: str) -> list[dict[str, Any]]:
        """Samples of an instant query that must succeed: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr!r}: {answer}"
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The one sample's value, None when the result is empty."""
        result = self.vector(expr)
        assert len(result) <= 1, f"{expr!r} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``expr`` returns a non-empty vector (write the condition into the PromQL)."""
        return wait_until(f"{expr!r} in Prometheus", lambda: self.vector(expr), timeout)

    def alerts(self) -> list[dict[str, Any]]:
        return http("GET", self.url + "/api/v1/alerts").json()["data"]["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return http("GET", self.url + "/api/v1/rules").json()["data"]["groups"]

    def targets(self) -> list[dict[str, Any]]:
        return http("GET", self.url + "/api/v1/targets").json()["data"]["activeTargets"]


def start_prometheus(
    workdir: Path,
    scrape_configs: list[dict[str, Any]],
    *,
    rule_files: list[Path] = (),
    alertmanager_url: str | None = None,
    interval: str = "1s",
) -> Prometheus:
    """Prometheus scraping and evaluating every ``interval``; the configuration is checked by promtool."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": scrape_configs,
    }
    if alertmanager_url:
        host = urllib.parse.urlsplit(alertmanager_url).netloc
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    check = subprocess.run(
        [binary("promtool"), "check", "config", str(config_path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    return Prometheus(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        workdir,
        port,
    ).start()


# -- Alertmanager ----------------------------------------------------------------------------------


@dataclass
class Alertmanager(Server):
    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts; every alert, silenced and inhibited ones included."""
        query = urllib.parse.urlencode({"silenced": "true", "inhibited": "true", "active": "true", **filters})
        return http("GET", f"{self.url}/api/v2/alerts?{query}").json()


class WebhookSink:
    """An HTTP server that records what Alertmanager's webhook receivers post, by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with sink._lock:
                    sink.received.append((self.path, payload))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> WebhookSink:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alertnames(self, path: str) -> set[str]:
        """Names of the firing alerts posted to ``path`` so far."""
        with self._lock:
            return {
                alert["labels"]["alertname"]
                for got, payload in self.received
                if got == path
                for alert in payload.get("alerts", [])
                if alert.get("status") == "firing"
            }


def alertmanager_test_config(source: Path, target: Path, webhook_base: str) -> Path:
    """The shipped Alertmanager configuration with test timing and receivers pointed at ``webhook_base``.

    Routing, grouping and inhibit rules stay as shipped; only group_wait/group_interval shrink to 1s
    (so a notification leaves within the test) and the receivers' host becomes the test's sink.
    """
    text = source.read_text(encoding="utf-8")
    assert SHIPPED_WEBHOOK_BASE in text, f"{source} no longer uses {SHIPPED_WEBHOOK_BASE}; update the test"
    doc = yaml.safe_load(text.replace(SHIPPED_WEBHOOK_BASE, webhook_base))
    doc["route"].update(group_wait="1s", group_interval="1s")
    target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return target


def start_alertmanager(workdir: Path, config_path: Path) -> Alertmanager:
    workdir.mkdir(parents=True, exist_ok=True)
    check = subprocess.run(
        [binary("amtool"), "check-config", str(config_path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    return Alertmanager(
        "alertmanager",
        [
            binary("prometheus-alertmanager"),
            f"--config.file={config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: a single, private instance
            "--log.level=warn",
        ],
        workdir,
        port,
    ).start()


# -- Pushgateway -----------------------------------------------------------------------------------


@dataclass
class Pushgateway(Server):
    def samples(self, job: str) -> dict[str, list[tuple[dict[str, str], float]]]:
        """What the gateway holds for ``job``: metric name -> [(labels, value), ...] of the exposition."""
        from prometheus_client.parser import text_string_to_metric_families

        reply = http("GET", self.url + "/metrics")
        assert reply.status == 200, reply.text
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.labels.get("job") == job:
                    out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out


def start_pushgateway(workdir: Path) -> Pushgateway:
    port = free_port()
    return Pushgateway(
        "pushgateway",
        [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        workdir,
        port,
    ).start()


# -- the sidecar -----------------------------------------------------------------------------------


def sidecar_env(workdir: Path, mongodb_uri: str, **settings: str) -> dict[str, str]:
    """The process environment for a ``sidecar`` command: no inherited SIDECAR_* (a developer's own
    settings must not leak in), a backup and log dir under ``workdir``, settings by attribute name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    env.update(
        SIDECAR_MONGODB_URI=mongodb_uri,
        SIDECAR_BACKUP_DIR=str(workdir / "backups"),
        SIDECAR_LOG_DIR=str(workdir / "logs"),
        SIDECAR_MIN_FREE_BYTES="0",
        SIDECAR_CONNECT_TIMEOUT_SECONDS="2",
    )
    env.update({f"SIDECAR_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def run_sidecar(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120.0):
    """``python -m sidecar ARGV`` to completion."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class SidecarServer(Server):
    admin_token: str = ""
    read_token: str = ""
    backup_dir: Path = field(default_factory=Path)
    first_scrape: str = ""

    def get(self, path: str, token: str | None = None, timeout: float = 30.0) -> Reply:
        return http("GET", self.url + path, token=token, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float = 300.0) -> Reply:
        return http("POST", self.url + path, token=self.admin_token, body=body, timeout=timeout)


def start_sidecar(
    workdir: Path, mongodb_uri: str, extra_env: dict[str, str] | None = None, **settings: str
) -> SidecarServer:
    """``python -m sidecar serve`` on a free port, with fresh tokens, probing health every 0.5 s.

    The backup schedule is set to 02:00 on 1 January so no scheduled backup interferes with a test run,
    while the next-run timestamp is still exported. Ready once /health reports a finished probe.
    """
    port = free_port()
    admin, read = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    defaults = {
        "host": "127.0.0.1",
        "port": str(port),
        "admin_token": admin,
        "read_token": read,
        "health_interval_seconds": "0.5",
        "connect_timeout_seconds": "2",  # a scrape that pinged MongoDB would take this long when it is down
        "schedule": "0 2 1 1 *",
        "drill_schedule": "off",
        "shutdown_grace_seconds": "10",
    }
    env = {**sidecar_env(workdir, mongodb_uri, **{**defaults, **settings}), **(extra_env or {})}
    server = SidecarServer(
        "sidecar",
        [sys.executable, "-m", "sidecar", "serve"],
        workdir,
        port,
        ready_path="/health",
        env=env,
        admin_token=admin,
        read_token=read,
        backup_dir=Path(env["SIDECAR_BACKUP_DIR"]),
    )
    server.start(timeout=60)
    wait_until(
        "the sidecar's first health probe",
        lambda: server.get("/health").json().get("checkedAt"),
        timeout=30,
        describe=server.log_tail,
    )
    return server


# -- pytest fixtures (import them into the test module that uses them) -------------------------------


@pytest.fixture(scope="module")
def e2e_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """A private MongoDB-wire server for one test module, with a little data, that tests may stop and
    start again (conftest's own_server is the per-test version; these servers live for the module)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("e2e-mongo") / "data").start()
    try:
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000) as client:
            shop = client["shop"]
            shop["orders"].insert_many(
                [
                    {"n": i, "item": f"item-{i % 37}", "qty": i % 5, "note": "x" * (i % 200)}
                    for i in range(3000)
                ]
            )
            shop["customers"].insert_many([{"_id": i, "name": f"customer {i}"} for i in range(500)])
        yield server
    finally:
        discard(server)


@pytest.fixture(scope="module")
def webhook_sink() -> Iterator[WebhookSink]:
    sink = WebhookSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def alertmanager(
    tmp_path_factory: pytest.TempPathFactory, webhook_sink: WebhookSink
) -> Iterator[Alertmanager]:
    """The shipped alerts/alertmanager.yml (test timing, receivers at ``webhook_sink``), running."""
    workdir = tmp_path_factory.mktemp("alertmanager")
    config = alertmanager_test_config(ALERTMANAGER_CONFIG, workdir / "alertmanager.yml", webhook_sink.url)
    server = start_alertmanager(workdir, config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    server = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    try:
        yield server
    finally:
        server.stop()
