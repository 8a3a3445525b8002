"""End to end, against real servers: ``sidecar serve`` on a real MongoDB-wire server, a real Prometheus
scraping it every second with the shipped alert rules, alerting to a real Alertmanager running the
shipped routing; and ``sidecar backup --once`` pushing to a real Pushgateway.

What each test proves is in its docstring; docs/observability.md explains the whole picture.
Run alone with:  .venv/bin/pytest tests/test_observability_e2e.py
"""

from __future__ import annotations

import json
import math
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
import yaml

from sidecar import __version__
from sidecar.embedded import EmbeddedServer, free_port
from sidecar.pitr.record.catalog import SliceCatalog
from sidecar.time_input import parse_iso
from tests import prom_fixtures, s3_fixture
from tests.dashboard_queries import DASHBOARDS, METRICS_DOC, documented_metrics, iter_panel_queries
from tests.prom_fixtures import (
    RULES,
    Alertmanager,
    Prometheus,
    Pushgateway,
    Server,
    SidecarServer,
    WebhookSink,
    binary,
    fast_rules,
    http,
    run_sidecar,
    sidecar_env,
    start_prometheus,
    start_sidecar,
    wait_until,
)
from tests.s3_fixture import SeaweedS3

# the fixtures, for pytest to find
e2e_mongo, webhook_sink = prom_fixtures.e2e_mongo, prom_fixtures.webhook_sink
alertmanager, pushgateway = prom_fixtures.alertmanager, prom_fixtures.pushgateway
seaweed = s3_fixture.seaweed

pytestmark = pytest.mark.slow

JOB = "mongobackup"  # the scrape job name of alerts/prometheus.example.yml
BACKUP_MAX_AGE = 7200  # a non-default threshold, to see it travel from the setting to Prometheus
CRONJOB = "mongobackup_cronjob"
PITR_RPO = 10  # seconds: short, so that the MongoDB-down test sees the archive fall behind


# -- the stack -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    e2e_mongo: EmbeddedServer,
    seaweed: SeaweedS3,
    alertmanager: Alertmanager,
) -> Iterator[SidecarServer]:
    """The sidecar with off-site copies to a real S3 store (SeaweedFS, its own key prefix) and the oplog
    archive, so the upload and PITR series and panels have data too. ``first_scrape`` is its /metrics
    right after start."""
    server = start_sidecar(
        tmp_path_factory.mktemp("sidecar"),
        e2e_mongo.uri,
        alert_backup_max_age_seconds=str(BACKUP_MAX_AGE),
        s3_endpoint=seaweed.endpoint,
        s3_bucket=seaweed.bucket,
        s3_prefix=f"observability-e2e-{secrets.token_hex(4)}/",
        alertmanager_url=alertmanager.url,
        # the oplog archive on (the server is a replica set), cutting slices quickly; a fresh test
        # server's oplog spans seconds, so its window limit is 1 s to keep the healthy stack quiet
        pitr="on",
        pitr_slice_seconds="0.5",
        alert_pitr_rpo_seconds=str(PITR_RPO),
        alert_oplog_window_min_seconds="1",
        extra_env=seaweed.env(),
    )
    try:
        server.first_scrape = server.get("/metrics").text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, sidecar: SidecarServer, alertmanager: Alertmanager
) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    # The shipped rules hold alerts for minutes (`for: 2m` and more) before they fire; the copy loaded
    # here has every `for:` set to 1s so alerts reach Alertmanager within the test. Expressions,
    # labels and annotations are the shipped ones.
    rules = fast_rules(RULES, workdir / "mongobackup.rules.yml", for_="1s")
    server = start_prometheus(
        workdir,
        [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"]}]}],
        rule_files=[rules],
        alertmanager_url=alertmanager.url,
    )
    try:
        yield server
    finally:
        server.stop()


def sel(sidecar: SidecarServer, **labels: str) -> str:
    """A label selector for this sidecar's series, plus ``labels``."""
    pairs = {"job": JOB, "instance": f"127.0.0.1:{sidecar.port}", **labels}
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


@pytest.fixture(scope="module")
def backed_up(sidecar: SidecarServer, prometheus: Prometheus, e2e_mongo: EmbeddedServer) -> dict:
    """One manual backup through the API (with its off-site copy and the full integrity test that
    follows it), then a restore drill of it (on a throwaway embedded server), taken after Prometheus
    has recorded the state before them (so the dashboards' increase() panels see them happen), and
    scraped since, once the oplog archive holds a restorable window from that backup."""
    prometheus.wait_for(
        f"count_over_time(mongobackup_backup_runs_total{sel(sidecar, trigger='manual')}[1m]) >= 2"
    )
    reply = sidecar.post("/api/backup/create?wait=true")
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["backup"]["status"] == "completed", body
    assert body["backup"]["locations"] == ["local", "s3"], body["backup"]
    drill = sidecar.post(
        "/api/backup/test?wait=true", {"level": "drill", "fileName": body["backup"]["fileName"]}
    )
    assert drill.status == 200, drill.text
    body["drill"] = drill.json()
    prometheus.wait_for(f"mongobackup_verify_last_success_timestamp_seconds{sel(sidecar, level='drill')} > 0")
    assert body["drill"]["verification"]["verification"]["drill"]["server"] == "embedded", body["drill"]
    # the application's next write is archived after the backup's consistent point: the backup opens
    # a window (the drill wrote nothing there)
    with pymongo.MongoClient(e2e_mongo.uri) as client:
        client.e2e_app.events.insert_one({"after": "the backup"})
    prometheus.wait_for(f"mongobackup_pitr_window_start_timestamp_seconds{sel(sidecar)} > 0")
    body["backup"] = sidecar.get("/api/backup/list", token=sidecar.read_token).json()["backups"][0]
    return body


def local_alerts(sidecar: SidecarServer) -> dict[str, dict]:
    reply = sidecar.get("/api/v1/monitoring/alerts", token=sidecar.read_token)
    assert reply.status == 200, reply.text
    return {a["name"]: a for a in reply.json()["alerts"]}


def prometheus_alerts(prometheus: Prometheus, sidecar: SidecarServer) -> dict[str, str]:
    """This sidecar's alerts in Prometheus: name -> pending | firing."""
    instance = f"127.0.0.1:{sidecar.port}"
    return {
        a["labels"]["alertname"]: a["state"]
        for a in prometheus.alerts()
        if a["labels"].get("instance") == instance
    }


def alertmanager_alert(alertmanager: Alertmanager, sidecar: SidecarServer, name: str) -> dict | None:
    """This sidecar's alert ``name`` in Alertmanager (active, silenced or inhibited), or None."""
    instance = f"127.0.0.1:{sidecar.port}"
    found = [
        a
        for a in alertmanager.alerts()
        if a["labels"]["alertname"] == name and a["labels"].get("instance") == instance
    ]
    return found[0] if found else None


def assert_local_view_agrees(prometheus: Prometheus, sidecar: SidecarServer) -> set[str]:
    """The alerts endpoint and Prometheus agree on every condition both evaluate (the endpoint has no
    scrape-level, off-site, forecast or CronJob alerts); returns the active ones, or {"(none)"}."""

    def compare() -> set[str] | None:
        local = local_alerts(sidecar)
        remote = prometheus_alerts(prometheus, sidecar)
        shared_active_local = {n for n, a in local.items() if a["active"]}
        shared_active_remote = {n for n in remote if n in local}
        return (shared_active_local or {"(none)"}) if shared_active_local == shared_active_remote else None

    return wait_until("the alerts endpoint and Prometheus to agree", compare, timeout=20)


# -- (a) the series arrive -------------------------------------------------------------------------


def test_backup_series_arrive_in_prometheus(sidecar: SidecarServer, prometheus: Prometheus, backed_up: dict):
    """A manual backup through the API shows up in Prometheus as the catalog recorded it: last-success
    timestamp, size, duration, the trigger=manual counters, the histogram, archive gauges, its S3 copy,
    the full integrity test after it and the drill; build info, MongoDB health and the configured
    thresholds are there too."""
    entry = backed_up["backup"]
    s = sel(sidecar)
    value = prometheus.value

    assert value(f"up{s}") == 1
    finished = parse_iso(entry["finishedAt"]).timestamp()
    assert value(f"mongobackup_backup_last_success_timestamp_seconds{s}") == pytest.approx(finished, abs=0.01)
    assert value(f"mongobackup_backup_last_attempt_timestamp_seconds{s}") == pytest.approx(finished, abs=0.01)
    assert value(f"mongobackup_backup_last_success{s}") == 1
    assert value(f"mongobackup_backup_last_size_bytes{s}") == entry["sizeBytes"] > 0
    assert value(f"mongobackup_backup_last_duration_seconds{s}") == pytest.approx(entry["durationSeconds"])
    assert value(f"mongobackup_backup_runs_total{sel(sidecar, trigger='manual')}") == 1
    assert value(f"mongobackup_backup_successes_total{sel(sidecar, trigger='manual')}") == 1
    for trigger in ("schedule", "cronjob"):
        assert value(f"mongobackup_backup_runs_total{sel(sidecar, trigger=trigger)}") == 0
    assert value(f"mongobackup_backup_duration_seconds_count{s}") == 1
    assert value(f"mongobackup_backup_duration_seconds_bucket{sel(sidecar, le='30.0')}") == 1
    assert value(f"mongobackup_archives{sel(sidecar, destination='local')}") == 1
    assert value(f"mongobackup_archives_size_bytes{sel(sidecar, destination='local')}") == entry["sizeBytes"]
    created = parse_iso(entry["createdAt"]).timestamp()
    assert value(f"mongobackup_archive_newest_timestamp_seconds{sel(sidecar, destination='local')}") == (
        pytest.approx(created, abs=0.01)
    )

    remote = entry["remote"]["s3"]
    assert value(f"mongobackup_archives{sel(sidecar, destination='s3')}") == 1
    assert value(f"mongobackup_upload_bytes_total{sel(sidecar, destination='s3')}") == remote["sizeBytes"]
    assert value(f"mongobackup_upload_failures_total{sel(sidecar, destination='s3')}") == 0
    assert value(f"mongobackup_upload_last_success_timestamp_seconds{sel(sidecar, destination='s3')}") == (
        pytest.approx(parse_iso(remote["uploadedAt"]).timestamp(), abs=1)
    )
    for level in ("full", "drill"):  # full: SIDECAR_VERIFY_AFTER_BACKUP's default; drill: the API call
        record = entry["verification"][level]
        assert record["ok"] is True
        assert value(f"mongobackup_verify_runs_total{sel(sidecar, level=level)}") == 1
        assert value(f"mongobackup_verify_failures_total{sel(sidecar, level=level)}") == 0
        assert value(f"mongobackup_verify_last_success{sel(sidecar, level=level)}") == 1
        assert value(f"mongobackup_verify_last_success_timestamp_seconds{sel(sidecar, level=level)}") == (
            pytest.approx(parse_iso(record["at"]).timestamp(), abs=0.01)
        )
    assert value(f"mongobackup_verify_runs_total{sel(sidecar, level='quick')}") == 0

    (build,) = prometheus.vector(f"mongobackup_build_info{s}")
    assert build["metric"]["version"] == __version__ and build["value"][1] == "1"
    assert value(f"mongobackup_mongodb_up{s}") == 1
    assert value(f"mongobackup_mongodb_ping_latency_seconds{s}") > 0
    (info,) = prometheus.vector(f"mongobackup_mongodb_info{s}")
    assert info["metric"]["version"] == entry["serverVersion"]
    assert value(f"mongobackup_mongodb_replset_member_state{s}") == 1  # the one-node replica set's primary
    assert value(f"mongobackup_disk_total_bytes{s}") >= value(f"mongobackup_disk_free_bytes{s}") > 0

    # thresholds: one source, the sidecar's settings (one of them set away from its default)
    assert value(f"mongobackup_alert_threshold_backup_age_seconds{s}") == BACKUP_MAX_AGE
    assert value(f"mongobackup_alert_threshold_verify_age_seconds{s}") == 26 * 3600
    assert value(f"mongobackup_alert_threshold_drill_age_seconds{s}") == 8 * 24 * 3600
    assert value(f"mongobackup_alert_threshold_size_drop_ratio{s}") == 0.5
    assert value(f"mongobackup_alert_threshold_disk_free_ratio{s}") == 0.10
    assert value(f"mongobackup_alert_threshold_pitr_rpo_seconds{s}") == PITR_RPO
    assert value(f"mongobackup_alert_threshold_oplog_window_seconds{s}") == 1

    status = sidecar.get("/api/backup/status", token=sidecar.read_token).json()
    next_run = parse_iso(status["nextBackupAt"]).timestamp()
    assert value(f"mongobackup_next_backup_timestamp_seconds{s}") == pytest.approx(next_run, abs=1)


def test_shipped_rules_load_evaluate_cleanly_and_stay_quiet(
    sidecar: SidecarServer, prometheus: Prometheus, backed_up: dict
):
    """Real Prometheus loads every shipped rule and evaluates each against live data without an error
    (no many-to-many joins, no bad templates); on a healthy sidecar with a fresh backup, none of the
    conditions the alerts endpoint also evaluates is active on either side."""
    shipped = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}

    def evaluated() -> list[dict] | None:
        rules = [r for g in prometheus.rule_groups() for r in g["rules"]]
        done = all(r.get("lastEvaluation", "").startswith("2") for r in rules)
        return rules if done and len(rules) == len(shipped) else None

    rules = wait_until("every rule to have been evaluated", evaluated, timeout=15)
    assert {r["name"] for r in rules} == shipped
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    assert assert_local_view_agrees(prometheus, sidecar) == {"(none)"}


# -- (b) the exposition passes promtool ------------------------------------------------------------


def test_promtool_check_metrics_on_a_live_scrape(sidecar: SidecarServer, backed_up: dict):
    """`promtool check metrics` finds no lint problem in a live scrape taken after a backup, an upload,
    an integrity test and a drill (so every label set the sidecar can emit is in it)."""
    reply = sidecar.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")  # the text exposition format
    check = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=reply.body, capture_output=True, timeout=60
    )
    assert check.returncode == 0 and not check.stdout and not check.stderr, (
        check.stdout + check.stderr
    ).decode()


def exposed(text: str) -> dict[str, set[str]]:
    """mongobackup_* metric name (histogram series folded) -> the destination labels seen."""
    out: dict[str, set[str]] = {}
    for match in re.finditer(r"^(mongobackup_\w+?)(?:_bucket|_count|_sum)?(\{[^}]*\})? ", text, re.M):
        dest = re.search(r'destination="([^"]*)"', match.group(2) or "")
        out.setdefault(match.group(1), set()).add(dest.group(1) if dest else "")
    return out


def test_every_documented_series_exists_from_start(sidecar: SidecarServer):
    """Before any job has run, the first scrape already carries every metric of the contract
    (docs/metrics.md), and with S3 configured the destination-labelled ones for s3 as well as local, so
    no alert rule or panel is blind until a first event."""
    first = exposed(sidecar.first_scrape)
    missing = sorted(set(documented_metrics()) - set(first))
    assert not missing, f"not exported at start-up: {missing}"
    for name in documented_metrics():
        if "`destination`" in documented_labels(name):
            want = {"s3"} if name.startswith("mongobackup_upload_") else {"local", "s3"}
            assert want <= first[name], f"{name} at start-up has destinations {sorted(first[name])}"


def documented_labels(name: str) -> str:
    row = re.search(rf"^\| `{name}` \|[^|]*\|([^|]*)\|", METRICS_DOC.read_text(encoding="utf-8"), re.M)
    return row.group(1) if row else ""


# -- (c) every dashboard panel returns data --------------------------------------------------------

# No allow-list: the stack runs every feature a panel reads (backup, S3 upload, integrity test, drill,
# retention and restore counters exist from start), so every panel query must return data.
PANEL_QUERIES = [q for path in DASHBOARDS for q in iter_panel_queries(path)]


@pytest.mark.parametrize(
    ("uid", "title", "expr"), PANEL_QUERIES, ids=[f"{u}:{t}:{i}" for i, (u, t, _) in enumerate(PANEL_QUERIES)]
)
def test_dashboard_panel_query_returns_data(
    sidecar: SidecarServer, prometheus: Prometheus, backed_up: dict, uid: str, title: str, expr: str
):
    """Every panel query of dashboards/*.json, as Grafana would send it, runs in Prometheus and returns
    at least one series with a number (not NaN) for the sidecar that has taken a backup."""
    instance = f"127.0.0.1:{sidecar.port}"
    expr = expr.replace('instance=~".*"', f'instance=~"{instance}"')  # its dots match themselves
    answer = prometheus.query(expr)
    assert answer["status"] == "success", f"{uid} / {title}: {answer}"
    result = answer["data"]["result"]
    assert result, f"{uid} / {title}: empty result for {expr}"
    values = [float(r["value"][1]) for r in result]
    assert any(not math.isnan(v) for v in values), f"{uid} / {title}: only NaN for {expr}: {result}"


# -- (d) MongoDB down ------------------------------------------------------------------------------


def test_mongodb_down_reaches_alertmanager(
    sidecar: SidecarServer,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    webhook_sink: WebhookSink,
    e2e_mongo: EmbeddedServer,
    backed_up: dict,
):
    """With MongoDB stopped: /metrics still answers 200 at once with mongobackup_mongodb_up 0; the
    MongoBackupMongoDBDown alert reaches Alertmanager and its critical receiver; the alerts endpoint
    shows it active; a backup attempt fails at the connect stage, and the MongoBackupLastFailed alert it
    causes is inhibited by the shipped inhibit rule, as is MongoBackupPitrRpoBreached once the oplog
    archive falls behind its (test-short) RPO. MongoDB is started again at the end."""
    s = sel(sidecar)
    instance = f"127.0.0.1:{sidecar.port}"
    e2e_mongo.stop()
    try:
        prometheus.wait_for(f"mongobackup_mongodb_up{s} == 0", timeout=30)

        scrape = sidecar.get("/metrics", timeout=5)
        assert scrape.status == 200
        assert re.search(r"^mongobackup_mongodb_up 0\.0$", scrape.text, re.M)
        # no I/O in a scrape: well under the 2 s a ping to the stopped server would wait
        assert scrape.seconds < 1.0, f"a scrape with MongoDB down took {scrape.seconds:.2f}s"
        assert prometheus.value(f"up{s}") == 1

        def am_alert(name: str) -> dict | None:
            return alertmanager_alert(alertmanager, sidecar, name)

        down = wait_until(
            "MongoBackupMongoDBDown in Alertmanager", lambda: am_alert("MongoBackupMongoDBDown")
        )
        assert down["status"]["state"] == "active"
        assert down["labels"]["severity"] == "critical" and down["labels"]["job"] == JOB
        assert down["annotations"]["runbook_url"].endswith("docs/alerts.md#mongobackupmongodbdown")
        assert instance in down["annotations"]["summary"]
        wait_until(
            "the critical receiver to be notified",
            lambda: "MongoBackupMongoDBDown" in webhook_sink.alertnames("/alerts/critical"),
        )

        from_am = sidecar.get("/api/v1/monitoring/alerts", token=sidecar.read_token).json()["alertmanager"]
        assert from_am["url"] == alertmanager.url and "error" not in from_am
        assert "MongoBackupMongoDBDown" in {a["name"] for a in from_am["alerts"]}

        local = local_alerts(sidecar)["MongoBackupMongoDBDown"]
        assert (
            local["active"] and local["since"] and local["value"] == 0.0 and local["severity"] == "critical"
        )

        failed = sidecar.post("/api/backup/create?wait=true", timeout=60)
        assert failed.status == 503, failed.text
        assert failed.json()["error"]["code"] == "mongodb_unavailable"
        prometheus.wait_for(
            f"mongobackup_backup_failures_total{sel(sidecar, trigger='manual', stage='connect')} == 1"
        )
        assert prometheus.value(f"mongobackup_backup_last_success{s}") == 0

        def inhibited(name: str) -> dict | None:
            # Alertmanager shows a new alert as active until its inhibitor has looked at it
            alert = am_alert(name)
            return alert if alert and alert["status"]["state"] == "suppressed" else None

        last_failed = wait_until(
            "MongoBackupLastFailed inhibited in Alertmanager", lambda: inhibited("MongoBackupLastFailed")
        )
        assert last_failed["status"]["inhibitedBy"], last_failed["status"]
        assert "MongoBackupLastFailed" not in webhook_sink.alertnames("/alerts/warning")
        # the archiver cannot read the oplog either: the archive falls behind its RPO, muted the same way
        rpo = wait_until(
            "MongoBackupPitrRpoBreached inhibited in Alertmanager",
            lambda: inhibited("MongoBackupPitrRpoBreached"),
        )
        assert rpo["status"]["inhibitedBy"] and rpo["labels"]["severity"] == "critical", rpo
        assert "MongoBackupPitrRpoBreached" not in webhook_sink.alertnames("/alerts/critical")

        assert assert_local_view_agrees(prometheus, sidecar) >= {
            "MongoBackupMongoDBDown",
            "MongoBackupLastFailed",
            "MongoBackupPitrRpoBreached",
        }
    finally:
        e2e_mongo.start()
    prometheus.wait_for(f"mongobackup_mongodb_up{s} == 1", timeout=30)


# -- (e) a wrong threshold is refused --------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("SIDECAR_ALERT_SIZE_DROP_RATIO", "2", "must be between 0.0 and 1.0, got 2.0"),
        ("SIDECAR_ALERT_DISK_FREE_MIN_RATIO", "ten percent", "must be a number, got 'ten percent'"),
        ("SIDECAR_ALERT_BACKUP_MAX_AGE_SECONDS", "30", "must be at least 60, got 30"),
    ],
)
def test_misconfigured_threshold_is_refused_at_start(tmp_path: Path, setting: str, value: str, message: str):
    """`sidecar serve` with a threshold out of range exits 2 before listening, with one line naming the
    setting and what is wrong."""
    port = free_port()
    env = sidecar_env(
        tmp_path,
        "mongodb://127.0.0.1:1/?directConnection=true",
        port=str(port),
        admin_token="a" * 24,
    )
    env[setting] = value
    result = run_sidecar(["serve"], env, tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"sidecar: error: {setting}: {message}"]
    assert not (tmp_path / "backups").exists()


# -- (f) CronJob mode and the Pushgateway ----------------------------------------------------------


def test_cronjob_push_keeps_last_success_after_a_failed_run(
    tmp_path: Path, e2e_mongo: EmbeddedServer, pushgateway: Pushgateway
):
    """`sidecar backup --once` push-adds its metrics under job mongobackup_cronjob; a later run that
    cannot reach MongoDB pushes its failure (failed stage connect, mongodb_up 0, a newer attempt) and
    leaves the last-success timestamp of the good run in the gateway. A Prometheus scraping the gateway
    (honor_labels, as alerts/prometheus.example.yml shows) sees the series under that job, the shipped
    rules evaluate cleanly on them, the staleness alert stays quiet and the failure alert fires."""
    env = sidecar_env(tmp_path, e2e_mongo.uri, pushgateway_url=pushgateway.url)
    first = run_sidecar(["backup", "--once", "--quiet"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    good = pushgateway.samples(CRONJOB)

    def one(samples: dict, name: str, **labels: str) -> float:
        found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
        assert len(found) == 1, (name, labels, samples.get(name))
        return found[0]

    (entry,) = json.loads(run_sidecar(["list", "--json"], env, tmp_path).stdout)
    success_ts = one(good, "mongobackup_backup_last_success_timestamp_seconds")
    assert success_ts == pytest.approx(parse_iso(entry["finishedAt"]).timestamp(), abs=0.01)
    assert one(good, "mongobackup_backup_runs_total", trigger="cronjob") == 1
    assert one(good, "mongobackup_backup_successes_total", trigger="cronjob") == 1
    assert one(good, "mongobackup_backup_runs_total", trigger="manual") == 0
    assert one(good, "mongobackup_backup_last_success") == 1
    assert one(good, "mongobackup_mongodb_up") == 1
    assert one(good, "mongobackup_alert_threshold_backup_age_seconds") == 26 * 3600
    first_push = one(good, "push_time_seconds")

    unreachable = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    second = run_sidecar(
        ["backup", "--once", "--quiet"],
        {**env, "SIDECAR_MONGODB_URI": unreachable, "SIDECAR_CONNECT_TIMEOUT_SECONDS": "1"},
        tmp_path,
    )
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines()[-1].startswith("sidecar: error: cannot reach MongoDB at 127.0.0.1:")
    bad = pushgateway.samples(CRONJOB)
    assert one(bad, "mongobackup_backup_last_success_timestamp_seconds") == success_ts
    assert one(bad, "mongobackup_backup_last_size_bytes") == entry["sizeBytes"]
    assert one(bad, "mongobackup_backup_last_success") == 0
    assert one(bad, "mongobackup_backup_last_attempt_timestamp_seconds") > success_ts
    assert one(bad, "mongobackup_backup_failures_total", trigger="cronjob", stage="connect") == 1
    assert one(bad, "mongobackup_mongodb_up") == 0
    assert one(bad, "push_time_seconds") > first_push

    workdir = tmp_path / "prometheus"
    rules = fast_rules(RULES, tmp_path / "rules.yml", for_="1s")  # as in the stack above: alerts in seconds
    prometheus = start_prometheus(
        workdir,
        [
            {
                "job_name": "mongobackup-pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway.url.removeprefix("http://")]}],
            }
        ],
        rule_files=[rules],
    )
    try:
        c = '{job="mongobackup_cronjob"}'
        prometheus.wait_for(f"mongobackup_backup_last_success_timestamp_seconds{c} == {success_ts!r}")
        assert prometheus.value(f"mongobackup_backup_last_success{c}") == 0

        def alerts() -> dict[str, str] | None:
            firing = {
                a["labels"]["alertname"]: a["state"]
                for a in prometheus.alerts()
                if a["labels"].get("job") == CRONJOB
            }
            return firing if firing.get("MongoBackupLastFailed") == "firing" else None

        firing = wait_until("MongoBackupLastFailed for the CronJob", alerts, timeout=20)
        assert "MongoBackupCronJobStale" not in firing
        rules_state = [r for g in prometheus.rule_groups() for r in g["rules"]]
        broken = {r["name"]: r.get("lastError") for r in rules_state if r["health"] != "ok"}
        assert not broken, broken
    finally:
        prometheus.stop()


# -- (g) a gap in the oplog archive ----------------------------------------------------------------


def test_forced_pitr_gap_reaches_alertmanager(
    sidecar: SidecarServer,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    webhook_sink: WebhookSink,
    e2e_mongo: EmbeddedServer,
    backed_up: dict,
):
    """A slice deleted from the middle of the archive: GET /api/backup/pitr reports a slice-missing gap
    with its bounds, mongobackup_pitr_gaps reaches 1 in Prometheus, MongoBackupPitrGap reaches
    Alertmanager and its warning receiver, and the alerts endpoint shows the same condition active.
    Runs last: the gap stays in the archive."""
    s = sel(sidecar)
    assert prometheus.value(f"mongobackup_pitr_gaps{s}") == 0
    assert prometheus.value(f"time() - mongobackup_pitr_caught_up_timestamp_seconds{s}") < 60

    def pitr() -> dict:
        return sidecar.get("/api/backup/pitr", token=sidecar.read_token).json()

    with pymongo.MongoClient(e2e_mongo.uri, serverSelectionTimeoutMS=10000) as client:

        def one_more_slice(n: int) -> None:
            before = pitr()["slices"]["count"]
            client["shop"]["pitr_gap"].insert_one({"n": n})
            wait_until(f"slice {before + 1}", lambda: pitr()["slices"]["count"] > before, timeout=20)

        for n in range(3):
            one_more_slice(n)
        catalog = SliceCatalog(sidecar.backup_dir / "oplog").load()
        middle = catalog["slices"][-2]
        (sidecar.backup_dir / "oplog" / middle["fileName"]).unlink()
        one_more_slice(3)  # a slice makes the archiver check the chain again

    (gap,) = pitr()["gaps"]
    assert gap["cause"] == "slice-missing" and gap["files"] == [middle["fileName"]], gap
    assert gap["from"] == middle["prev"] and gap["to"] == catalog["slices"][-1]["first"], gap
    prometheus.wait_for(f"mongobackup_pitr_gaps{s} == 1", timeout=15)

    alert = wait_until(
        "MongoBackupPitrGap in Alertmanager",
        lambda: alertmanager_alert(alertmanager, sidecar, "MongoBackupPitrGap"),
    )
    assert alert["status"]["state"] == "active" and alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith("docs/alerts.md#mongobackuppitrgap")
    wait_until(
        "the warning receiver to be notified",
        lambda: "MongoBackupPitrGap" in webhook_sink.alertnames("/alerts/warning"),
    )
    local = local_alerts(sidecar)["MongoBackupPitrGap"]
    assert local["active"] and local["value"] == 1.0
    assert "MongoBackupPitrGap" in assert_local_view_agrees(prometheus, sidecar)


# -- (h) CronJob mode: the archiver alone, scraped ---------------------------------------------------


def tailing(port: int) -> bool:
    """The archiver behind ``port`` tails the oplog: its caught-up time is set (from its first idle)."""
    exposition = http("GET", f"http://127.0.0.1:{port}/metrics").text
    found = re.search(r"^mongobackup_pitr_caught_up_timestamp_seconds (\S+)$", exposition, re.M)
    return found is not None and float(found[1]) > 0


def test_pitr_stream_serves_the_metrics_its_alerts_need(tmp_path: Path, e2e_mongo: EmbeddedServer):
    """`sidecar pitr stream --metrics-port` (the archiver of CronJob mode, with no `serve` beside it)
    scraped by a real Prometheus under the scrape job the ServiceMonitor gives it: the oplog archive's
    series arrive with the two thresholds their rules join on, the RPO rule's join finds its partner,
    MongoBackupOplogWindowShort fires on a window shorter than its limit, a slice deleted from the
    middle raises MongoBackupPitrGap, and no backup rule matches this target that takes no backups."""
    with pymongo.MongoClient(e2e_mongo.uri, serverSelectionTimeoutMS=10000) as client:
        client["shop"]["pitr_stream"].insert_one({"n": -2})
        time.sleep(1.1)  # the server's oplog window is at least a second long: its gauge is not 0
        client["shop"]["pitr_stream"].insert_one({"n": -1})
        port = free_port()
        env = sidecar_env(
            tmp_path,
            e2e_mongo.uri,
            pitr="auto",
            pitr_slice_seconds="0.3",
            alert_pitr_rpo_seconds="600",
            alert_oplog_window_min_seconds=str(30 * 24 * 3600),
        )
        stream = Server(
            "pitr-stream",
            [sys.executable, "-m", "sidecar", "pitr", "stream", "--metrics-port", str(port)],
            tmp_path,
            port,
            ready_path="/metrics",
            env=env,
        ).start()
        rules = fast_rules(RULES, tmp_path / "rules.yml", for_="1s")
        try:
            prometheus = start_prometheus(
                tmp_path / "prometheus",
                [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
                rule_files=[rules],
            )
        except BaseException:
            stream.stop()
            raise
        s = "{" + f'job="{JOB}",instance="127.0.0.1:{port}"' + "}"
        try:
            catalog = SliceCatalog(tmp_path / "backups" / "oplog")
            wait_until(
                "the archiver to tail the oplog", lambda: tailing(port)
            )  # writes from now are archived
            for n in range(3):
                before = len(catalog.slices())
                client["shop"]["pitr_stream"].insert_one({"n": n})
                wait_until(f"slice {before + 1}", lambda b=before: len(catalog.slices()) > b, timeout=20)
            prometheus.wait_for(f"mongobackup_pitr_slices_total{s[:-1]},result='ok'}} >= 3")
            rpo = prometheus.vector(
                f"time() - mongobackup_pitr_caught_up_timestamp_seconds{s}"
                f" - on(instance, job) mongobackup_alert_threshold_pitr_rpo_seconds{s}"
            )
            assert len(rpo) == 1 and float(rpo[0]["value"][1]) < -500, rpo  # joined, and within the RPO
            assert prometheus.value(f"mongobackup_alert_threshold_oplog_window_seconds{s}") == 30 * 24 * 3600
            assert prometheus.value(f"mongobackup_oplog_window_seconds{s}") >= 1
            (build,) = prometheus.vector(f"mongobackup_build_info{s}")  # the dashboards' instance list
            assert build["metric"]["version"] == __version__

            middle = catalog.slices()[-2]
            (catalog.directory / middle["fileName"]).unlink()
            client["shop"]["pitr_stream"].insert_one({"n": 3})  # the next slice checks the chain again
            prometheus.wait_for(f"mongobackup_pitr_gaps{s} == 1", timeout=20)

            def firing() -> set[str] | None:
                names = {
                    a["labels"]["alertname"]
                    for a in prometheus.alerts()
                    if a["labels"].get("instance") == f"127.0.0.1:{port}" and a["state"] == "firing"
                }
                return names if {"MongoBackupPitrGap", "MongoBackupOplogWindowShort"} <= names else None

            assert wait_until("the archiver's alerts", firing, timeout=20) == {
                "MongoBackupPitrGap",
                "MongoBackupOplogWindowShort",
            }
            broken = {
                r["name"]: r.get("lastError")
                for g in prometheus.rule_groups()
                for r in g["rules"]
                if r["health"] != "ok"
            }
            assert not broken, broken
        finally:
            prometheus.stop()
            stream.stop()
        assert stream.process.returncode == 0, stream.log_tail()
