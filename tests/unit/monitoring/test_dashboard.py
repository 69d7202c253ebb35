"""deploy/monitoring Grafana dashboard: loads, fits a schema of the fields it uses, queries served metrics.

The schema below is the subset of Grafana's dashboard model (schemaVersion 39) the dashboard relies
on; with promtool, every query (Grafana variables substituted) is also parsed by Prometheus' own
parser, as recording rules of a throw-away rules file.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from promql_names import (
    SCRAPE_SERIES,
    TARGET_LABELS,
    Served,
    label_values_metric,
    metric_names,
    selectors,
    served,
)

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "monitoring" / "grafana-dashboard-chain-overview.json"
GRID_WIDTH = 24

DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
GRID_POS = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": GRID_WIDTH},
        "x": {"type": "integer", "minimum": 0, "maximum": GRID_WIDTH - 1},
        "y": {"type": "integer", "minimum": 0},
    },
}
TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "legendFormat": {"type": "string"},
        "datasource": DATASOURCE,
        "instant": {"type": "boolean"},
        "range": {"type": "boolean"},
    },
}
PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {"enum": ["row", "timeseries", "stat"]},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "gridPos": GRID_POS,
        "datasource": DATASOURCE,
        "targets": {"type": "array", "minItems": 1, "items": TARGET},
        "fieldConfig": {
            "type": "object",
            "required": ["defaults", "overrides"],
            "properties": {"defaults": {"type": "object", "properties": {"unit": {"type": "string"}}}},
        },
        "options": {"type": "object"},
        "collapsed": {"type": "boolean"},
        "panels": {"type": "array"},
    },
    "if": {"properties": {"type": {"const": "row"}}},
    "then": {"properties": {"gridPos": {"properties": {"h": {"const": 1}, "w": {"const": GRID_WIDTH}}}}},
    "else": {"required": ["datasource", "targets", "fieldConfig"]},
}
VARIABLE = {
    "type": "object",
    "required": ["name", "type", "query"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z_]+$"},
        "type": {"enum": ["datasource", "query"]},
        "datasource": DATASOURCE,
        "query": {
            "oneOf": [
                {"type": "string"},
                {"type": "object", "required": ["query"], "properties": {"query": {"type": "string"}}},
            ]
        },
        "multi": {"type": "boolean"},
        "includeAll": {"type": "boolean"},
    },
    "if": {"properties": {"type": {"const": "query"}}},
    "then": {"required": ["datasource"]},
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "editable": {"type": "boolean"},
        "refresh": {"type": "string"},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {"list": {"type": "array", "items": VARIABLE}},
        },
        "annotations": {"type": "object"},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
    },
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exported() -> Served:
    return served()


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable's series expression."""
    found = [
        (f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        series = label_values_metric(query)
        assert series is not None, f"variable {var['name']}: only label_values(series, label) is used"
        found.append((f"variable {var['name']}", series))
    return found


def test_schema(dashboard: dict[str, Any]) -> None:
    jsonschema.validate(dashboard, SCHEMA)


def test_schema_rejects_what_grafana_would() -> None:
    broken = json.loads(DASHBOARD.read_text())
    broken["panels"][1]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_layout(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_variables_used_are_defined(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    text = json.dumps(dashboard["panels"]) + json.dumps(dashboard["templating"])
    used = set(re.findall(r"\$\{?([a-z_]+)", text)) - {"__rate_interval", "__interval", "__all"}
    assert used <= defined, used - defined


def test_covers_the_chain_overview(dashboard: dict[str, Any]) -> None:
    """Per-NF and per-replica pps, sessions, drops by reason, replica counts, reconcile latency."""
    exprs = [expr for _, expr in queries(dashboard)]

    def has(metric: str, grouping: str = "") -> bool:
        return any(metric in e and grouping in e.replace(" ", "") for e in exprs)

    assert has("flexsfc_nf_rx_packets_total", "by(nf)")
    assert has("flexsfc_nf_rx_packets_total", "by(nf,pod)")
    assert has("flexsfc_xc_active_sessions")
    assert has("flexsfc_dataplane_drops_total", "by(reason)")
    assert has("flexsfc_xc_replicas", "by(nf,state)")
    assert has("flexsfc_agent_reconcile_duration_seconds_bucket", "histogram_quantile")


def test_queries_name_only_served_metrics_and_labels(dashboard: dict[str, Any], exported: Served) -> None:
    for where, expr in queries(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - exported.names - SCRAPE_SERIES
        assert not unknown, f"{where}: {sorted(unknown)} not served by the exporter"
        for metric, matchers in selectors(expr):
            for label, _op, _value in matchers:
                assert label in exported.labels[metric] | TARGET_LABELS, (where, metric, label)


def test_metric_name_parser() -> None:
    expr = (
        'sum by (instance, reason) (rate(flexsfc_dataplane_drops_total{a="b{c}", d=~"$x"}[5m]))'
        " / on (instance) group_left sum(rate(flexsfc_nf_tx_packets_total[$__rate_interval] offset 1h))"
        ' > 0.01 and up == bool 1 or histogram_quantile(0.9, x_bucket{le!="1e3"}) unless vector(1)'
    )
    assert metric_names(expr) == {
        "flexsfc_dataplane_drops_total",
        "flexsfc_nf_tx_packets_total",
        "up",
        "x_bucket",
    }
    assert label_values_metric('label_values(m{a=~"$b"}, chain)') == 'm{a=~"$b"}'
    assert label_values_metric("label_values(chain)") is None


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian's prometheus package)"
)
def test_queries_parse_in_prometheus(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every query, Grafana's variables replaced by values, is valid PromQL to Prometheus itself."""
    substitutions = {"$__rate_interval": "1m", "$__interval": "30s"}
    rules = []
    for index, (_where, expr) in enumerate(queries(dashboard)):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        expr = re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)  # $namespace etc. only appear in regex matchers
        rules.append({"record": f"flexsfc_dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
