"""Static checks of the Grafana dashboards in dashboards/: portable, labelled, and every query valid PromQL
over documented metrics. (That each query returns data from a live sidecar is the end-to-end test's job.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.dashboard_queries import (
    DASHBOARDS,
    ROOT,
    documented_metrics,
    iter_panel_queries,
    iter_panels,
    metric_names,
)

UIDS = {"mongobackup-overview.json": "mongobackup-overview", "mongobackup-detail.json": "mongobackup-detail"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNITLESS_TYPES = {"row", "text"}
PROMTOOL = shutil.which("promtool") or "promtool"  # CI installs it; a missing one fails loudly


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_values(node, key: str):
    """Every value stored under ``key`` anywhere in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from all_values(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from all_values(item, key)


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in iter_panels(dashboard) if p["type"] not in UNITLESS_TYPES]


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request) -> dict:
    return load(request.param)


def test_the_expected_dashboards_exist():
    assert sorted(p.name for p in DASHBOARDS) == sorted(UIDS)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_fixed_uid_tags_and_schema(name):
    dashboard = load(ROOT / "dashboards" / name)
    assert dashboard["uid"] == UIDS[name]
    assert dashboard["tags"] == ["mongodb", "backup"]
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["id"] is None, "an exported id would collide on import"
    assert dashboard["title"]


def test_no_import_placeholders_or_fixed_datasources(dashboard):
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    text = json.dumps(dashboard)
    assert "${DS_" not in text
    for value in all_values(dashboard, "datasource"):
        assert value in (DATASOURCE, "${datasource}"), f"hard-coded datasource {value!r}"


def test_template_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["datasource"] == DATASOURCE
    query = instance["query"]["query"] if isinstance(instance["query"], dict) else instance["query"]
    assert query == "label_values(mongobackup_build_info, instance)"
    assert instance["includeAll"] and instance["allValue"] == ".*"


def test_every_panel_queries_the_template_datasource(dashboard):
    panels = query_panels(dashboard)
    assert panels
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target["expr"].strip(), f"{panel['title']}: empty expr"


def test_every_panel_has_a_unit_title_and_place(dashboard):
    ids = [p["id"] for p in iter_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in iter_panels(dashboard):
        assert panel.get("title"), panel
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
    for panel in query_panels(dashboard):
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"


def test_every_selector_is_filtered_by_the_instance_variable(dashboard):
    selector = re.compile(r"\bmongobackup_\w+(\{[^}]*\})?")
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            for match in selector.finditer(target["expr"]):
                assert 'instance=~"$instance"' in (match.group(1) or ""), (
                    f"{panel['title']}: {match.group(0)} ignores the instance variable"
                )


def test_every_metric_is_documented(dashboard):
    documented = documented_metrics()
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no mongobackup_ metric in {target['expr']!r}"
            unknown = names - documented.keys()
            assert not unknown, f"{panel['title']}: {sorted(unknown)} not in docs/metrics.md"


def test_dashboards_link_to_each_other():
    for name, uid in UIDS.items():
        others = set(UIDS.values()) - {uid}
        urls = {link["url"] for link in load(ROOT / "dashboards" / name)["links"]}
        for other in others:
            assert any(url.startswith(f"/d/{other}") for url in urls), f"{name} does not link to {other}"


def test_substituted_queries_leave_no_variables():
    queries = [q for path in DASHBOARDS for q in iter_panel_queries(path)]
    assert len(queries) >= 40
    for uid, title, expr in queries:
        assert "$" not in expr, (uid, title, expr)
        assert 'instance=~".*"' in expr, (uid, title, expr)


def test_every_query_parses(tmp_path):
    """promtool check rules parses each expr of a throwaway recording rule with Prometheus's own parser."""
    queries = [q for path in DASHBOARDS for q in iter_panel_queries(path)]
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, (_, _, expr) in enumerate(queries)]
    rule_file = tmp_path / "dashboard-queries.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_promtool_rejects_a_broken_query(tmp_path):
    """The parse check above is only worth something if promtool rejects a broken expression."""
    rule_file = tmp_path / "broken.rules.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (le (rate(x[5m]))"}]}]}
        )
    )
    result = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert result.returncode != 0


def test_provisioning_examples():
    provisioning = ROOT / "dashboards" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/mongobackup"

    datasources = yaml.safe_load((provisioning / "datasources.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
