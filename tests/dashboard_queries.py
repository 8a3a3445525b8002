"""PromQL of the Grafana dashboards, made sendable to Prometheus; metric names of the contract.

``iter_panel_queries`` turns every panel target of a dashboard into a plain PromQL expression: the
``instance`` template variable becomes a regex (``.*`` by default) and Grafana's interval variables
become fixed durations, so the expression parses in ``promtool`` and runs against Prometheus's
``/api/v1/query``. A variable it does not know raises, instead of reaching Prometheus unreplaced.

``documented_metrics`` reads the metric table of docs/metrics.md; ``metric_names`` lists the
``mongobackup_*`` metrics an expression uses. The dashboard and alert-rule tests hold both to it.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Grafana's built-in interval variables and the durations that stand in for them. $__rate_interval
# is at least four scrape intervals in Grafana; 5m covers scrape intervals up to 75s.
INTERVALS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"\bmongobackup_[a-z_]+")
_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def substitute(expr: str, instance: str = ".*") -> str:
    """``expr`` with $instance / ${instance} and Grafana's interval variables replaced."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name == "instance":
            return instance
        if name in INTERVALS:
            return INTERVALS[name]
        raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def iter_panels(dashboard: dict) -> list[dict]:
    """All panels, including those inside collapsed rows."""
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def iter_panel_queries(path: str | Path, instance: str = ".*") -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, substituted expr) for every panel target with an expr."""
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        (dashboard["uid"], panel.get("title", ""), substitute(target["expr"], instance))
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


@functools.cache
def documented_metrics() -> dict[str, str]:
    """Metric name -> type, from the table in docs/metrics.md."""
    table = METRICS_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(mongobackup_\w+)` \| ([^|]+?) \|", table, re.M)
    return {name: kind.split()[0] for name, kind in rows}


def metric_names(expr: str) -> set[str]:
    """The mongobackup_* metrics ``expr`` reads, histogram series folded to the histogram's name.

    Quoted strings are skipped, so a label value such as job="mongobackup_cronjob" is not a metric.
    """
    documented = documented_metrics()
    names = set()
    for name in _METRIC.findall(_STRING.sub('""', expr)):
        base = _HISTOGRAM_SUFFIX.sub("", name)
        names.add(base if documented.get(base) == "histogram" else name)
    return names
