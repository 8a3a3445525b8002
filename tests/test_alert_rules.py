"""The alert rules, their promtool unit tests, the Alertmanager and Prometheus examples, and the runbooks
they point at (docs/alerts.md, docs/alerts.ko.md) stay valid and consistent with each other and with the
metric contract in docs/metrics.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dashboard_queries import ROOT, documented_metrics, metric_names

ALERTS = ROOT / "alerts"
RULES = ALERTS / "mongobackup.rules.yml"
RULE_TESTS = ALERTS / "mongobackup.rules.test.yml"
ALERTMANAGER = ALERTS / "alertmanager.yml"
PROMETHEUS = ALERTS / "prometheus.example.yml"
RUNBOOKS = [ROOT / "docs" / "alerts.md", ROOT / "docs" / "alerts.ko.md"]
RUNBOOK_URL = "https://github.com/mongo-backup-sidecar/mongo-backup-sidecar/blob/main/docs/alerts.md#"
RECEIVERS = {"critical": "mongobackup-critical", "warning": "mongobackup-warning"}

# CI installs both; a missing one fails loudly instead of skipping.
PROMTOOL = shutil.which("promtool") or "promtool"
AMTOOL = shutil.which("amtool") or "amtool"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERT_RULES = alert_rules()
ALERT_NAMES = [rule["alert"] for rule in ALERT_RULES]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            anchors.add(github_anchor(match.group(1)))
    return anchors


def test_promtool_check_rules():
    result = run(PROMTOOL, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = run(PROMTOOL, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config():
    result = run(AMTOOL, "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_example_config_is_valid_and_loads_the_rules():
    result = run(PROMTOOL, "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert config["rule_files"] == [RULES.name]
    (job,) = config["scrape_configs"]
    # The sidecar alerts select up{job=~".*mongobackup.*"}.
    assert re.fullmatch(".*mongobackup.*", job["job_name"])
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:5000"]


@pytest.mark.parametrize("severity", sorted(RECEIVERS))
def test_alertmanager_routes_by_severity(severity):
    result = run(
        AMTOOL,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"severity={severity}",
        "alertname=MongoBackupTooOld",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [RECEIVERS[severity]]


def test_alertmanager_groups_and_inhibits_by_instance():
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    assert config["route"]["group_by"] == ["alertname", "instance"]
    source = ['alertname="MongoBackupMongoDBDown"']
    mongodb_down = [rule for rule in config["inhibit_rules"] if rule["source_matchers"] == source]
    assert len(mongodb_down) == 1
    assert mongodb_down[0]["equal"] == ["instance"]
    (target,) = mongodb_down[0]["target_matchers"]
    muted = re.fullmatch(r'alertname=~"(.+)"', target).group(1)
    for name in ("MongoBackupLastFailed", "MongoBackupTooOld", "MongoBackupNoSuccessSinceStart"):
        assert re.fullmatch(muted, name), f"MongoDB down must mute {name}"
    assert not re.fullmatch(muted, "MongoBackupMongoDBDown")


def test_alertmanager_names_only_existing_alerts():
    named = set(re.findall(r"MongoBackup\w+", ALERTMANAGER.read_text(encoding="utf-8")))
    assert named
    unknown = named - set(ALERT_NAMES)
    assert not unknown, f"unknown alerts in alertmanager.yml: {sorted(unknown)}"


def test_every_severity_has_a_route():
    assert {rule["labels"]["severity"] for rule in ALERT_RULES} <= RECEIVERS.keys()


def test_alert_names_are_unique_and_prefixed():
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES))
    for name in ALERT_NAMES:
        assert re.fullmatch(r"MongoBackup(?:[A-Z][a-zA-Z]*)+", name), name


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_alert_has_severity_and_annotations(rule):
    assert rule["labels"]["severity"] in RECEIVERS
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert "{{" in annotations["description"], "the description should show the values behind the alert"
    assert annotations["runbook_url"] == RUNBOOK_URL + github_anchor(rule["alert"])


@pytest.mark.parametrize("runbook", RUNBOOKS, ids=lambda p: p.name)
def test_runbooks_have_a_section_per_alert_and_no_other(runbook):
    anchors = heading_anchors(runbook)
    for rule in ALERT_RULES:
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{runbook.name} has no heading for #{anchor}"
    documented = {a for a in anchors if a.startswith("mongobackup")}
    stale = documented - {github_anchor(name) for name in ALERT_NAMES}
    assert not stale, f"{runbook.name} has sections for alerts that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_rule_uses_only_documented_metrics(rule):
    # The expr, and the queries in the annotation templates. (The sidecar alerts read only `up`.)
    used = metric_names(rule["expr"]) | set(
        re.findall(r"\bmongobackup_[a-z_]+", " ".join(rule["annotations"].values()))
    )
    unknown = used - documented_metrics().keys()
    assert not unknown, f"{sorted(unknown)} not in docs/metrics.md"


def test_rules_read_thresholds_from_the_sidecar():
    """Every configurable limit reaches the rules through its exported gauge."""
    exprs = " ".join(rule["expr"] for rule in ALERT_RULES)
    for gauge in (name for name in documented_metrics() if name.startswith("mongobackup_alert_threshold_")):
        assert gauge in exprs, f"{gauge} is exported but no rule uses it"


def unit_test_cases() -> list[dict]:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES.name]
    return [case for group in tests["tests"] for case in group.get("alert_rule_test", [])]


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_unit_tests_prove_alert_fires_and_stays_quiet(name):
    cases = [case for case in unit_test_cases() if case["alertname"] == name]
    firing = [case for case in cases if case.get("exp_alerts")]
    assert firing, f"no promtool test expects {name} to fire"
    assert any(not case.get("exp_alerts") for case in cases), f"no promtool test expects {name} to stay quiet"
    checked = [alert for case in firing for alert in case["exp_alerts"] if alert.get("exp_annotations")]
    assert checked, f"no promtool test checks the annotations of {name}"
    for alert in checked:
        assert alert["exp_annotations"]["runbook_url"].endswith("#" + github_anchor(name))
