"""deploy/monitoring alerts: promtool checks and unit-tests them; they name only served metrics.

`promtool check rules` and `promtool test rules` (Debian's prometheus package, installed by
scripts/setup.sh) run on the plain rules file and alert_rules_test.yaml, which has a firing and a
silent case for every alert. The PrometheusRule manifest carries the same groups.
"""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from promql_names import SCRAPE_SERIES, TARGET_LABELS, Served, metric_names, selectors, served

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "flexsfc-alerts.rules.yaml"
RULE_TESTS = Path(__file__).parent / "alert_rules_test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian's prometheus package; scripts/setup.sh)"
)
# Labels with a closed set of values (the data plane's and the agent's enums): an `=` matcher must name one.
CLOSED_LABELS = ("event", "reason", "state", "result", "changed", "side", "step")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


@pytest.fixture(scope="module")
def exported() -> Served:
    return served()


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules() -> None:
    out = promtool("check", "rules", str(RULES), cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    out = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases: dict[str, list[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(bool(case["exp_alerts"]))
    assert set(cases) == set(alerts())
    assert all(True in fired and False in fired for fired in cases.values()), cases


def test_alerts_are_complete_and_documented() -> None:
    doc = (REPO / "docs" / "observability.md").read_text()
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert f"`{rule['alert']}`" in doc, f"{rule['alert']} is not described in docs/observability.md"


def test_rules_name_only_served_metrics_and_labels(exported: Served) -> None:
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["expr"]
        unknown = names - exported.names - SCRAPE_SERIES
        assert not unknown, (
            f"{rule['alert']}: {sorted(unknown)} not served (served: {sorted(exported.names)})"
        )
        for metric, matchers in selectors(rule["expr"]):
            if metric in SCRAPE_SERIES:
                continue
            for label, op, value in matchers:
                assert label in exported.labels[metric] | TARGET_LABELS, (rule["alert"], metric, label)
                if op == "=" and label in CLOSED_LABELS:
                    assert value in exported.values[metric][label], (rule["alert"], metric, label, value)


def test_prometheusrule_manifest_carries_the_same_groups() -> None:
    manifest = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1" and manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["namespace"] == "flexsfc-system"
    # kube-prometheus-stack selects rules by the release label, as it selects the ServiceMonitor.
    monitor = yaml.safe_load((REPO / "deploy" / "autoscaling" / "servicemonitor.yaml").read_text())
    assert manifest["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]
    assert manifest["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_kustomization_lists_what_exists() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    files = list(kustomization["resources"])
    files += [f for gen in kustomization.get("configMapGenerator", []) for f in gen["files"]]
    assert files and all((MONITORING / f).is_file() for f in files), files
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return
    out = subprocess.run(
        [kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0 and "unknown command" in out.stderr:
        return  # a kubectl without kustomize
    assert out.returncode == 0, out.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(out.stdout))
    assert kinds == ["ConfigMap", "PrometheusRule"]
