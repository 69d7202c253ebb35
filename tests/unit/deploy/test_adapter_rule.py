"""The prometheus-adapter rule of deploy/autoscaling finds an NF pod's traffic whether or not the scrape
honoured the series' own `namespace`/`pod` labels, and the HPA example targets the example chain.

The rule's metricsQuery (a Go template with `<<`/`>>` delimiters) is rendered here the way the
adapter renders it for one request (pods firewall-a and firewall-b of namespace sfc-example), then
evaluated by promtool (`promtool test rules`, Prometheus' own PromQL engine) on series of both
shapes: honoured (namespace/pod are the NF's) and not (the agent's target labels there, the NF's as
exported_namespace/exported_pod). Skips without promtool (Debian's prometheus, scripts/setup.sh).
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parents[3] / "deploy"
ADAPTER_VALUES = DEPLOY / "autoscaling" / "prometheus-adapter-values.yaml"
HPA = DEPLOY / "autoscaling" / "hpa-example.yaml"
EXAMPLE = DEPLOY / "example" / "bump-in-the-wire.yaml"
NAMESPACE, PODS = "sfc-example", ["firewall-a", "firewall-b"]
SERIES = "flexsfc_nf_rx_packets_total"


def rule() -> dict[str, Any]:
    (first, *_) = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert isinstance(first, dict)
    return first


def render_query(template: str, series: str, namespace: str, pods: list[str]) -> str:
    """The adapter's template for one request: the fields of its queryTemplateArgs, and the one
    construct the rule uses on them (range over LabelValuesByName's []string joined by `|`)."""
    values = {"namespace": [namespace], "pod": pods}
    matcher = "pod=~" if len(pods) > 1 else "pod="
    fields = {
        "<<.Series>>": series,
        "<<.LabelMatchers>>": f'namespace="{namespace}",{matcher}"{"|".join(pods)}"',
        "<<.GroupBy>>": "pod",
    }
    for key, value in fields.items():
        template = template.replace(key, value)
    joined = re.compile(
        r'<<range \$i, \$v := index \.LabelValuesByName "(\w+)">><<if \$i>>\|<<end>><<\$v>><<end>>'
    )
    template = joined.sub(lambda m: "|".join(values[m.group(1)]), template)
    assert "<<" not in template and ">>" not in template, template
    return template


def test_the_rule_maps_series_to_pods_and_names_the_rate() -> None:
    found = rule()
    assert found["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert re.sub(found["name"]["matches"], found["name"]["as"].replace("${1}", r"\1"), SERIES) == (
        "flexsfc_nf_rx_packets_per_second"
    )
    query = found["metricsQuery"]
    assert "exported_pod" in query and "exported_namespace" in query and "<<.LabelMatchers>>" in query


def _series(labels: dict[str, str], per_15s: int) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{SERIES}{{{body}}}", "values": f"0+{per_15s}x40"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool (Debian's prometheus)")
def test_the_query_reads_honoured_and_exported_labels_alike(tmp_path: Path) -> None:
    query = render_query(rule()["metricsQuery"], SERIES, NAMESPACE, PODS)
    agent = {"namespace": "flexsfc-system", "pod": "flexsfc-agent-x1", "instance": "10.0.0.1:9101"}
    honoured = [
        _series({"namespace": NAMESPACE, "pod": "firewall-a", "iface": "eth1"}, 150),  # 10/s
        _series({"namespace": NAMESPACE, "pod": "firewall-a", "iface": "eth2"}, 150),  # 10/s
        _series({"namespace": "other", "pod": "firewall-a", "iface": "eth1"}, 1500),  # another namespace
    ]
    exported = [
        _series(
            agent | {"exported_namespace": NAMESPACE, "exported_pod": "firewall-b", "iface": "eth1"}, 300
        ),
        _series(agent | {"exported_namespace": "other", "exported_pod": "firewall-b", "iface": "eth1"}, 1500),
        _series(agent | {"exported_namespace": NAMESPACE, "exported_pod": "client-z", "iface": "eth1"}, 1500),
    ]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": honoured + exported,
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": '{pod="firewall-a"}', "value": 20},
                            {"labels": '{pod="firewall-b"}', "value": 20},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "adapter-rule-test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_hpa_example_targets_the_example_chain() -> None:
    hpa = yaml.safe_load(HPA.read_text())
    deployments = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"])
        for doc in yaml.safe_load_all(EXAMPLE.read_text())
        if doc and doc["kind"] == "Deployment"
    }
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment"
    assert (hpa["metadata"]["namespace"], target["name"]) in deployments
    assert hpa["metadata"]["namespace"] == NAMESPACE
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "flexsfc_nf_rx_packets_per_second"
