"""deploy/autoscaling: valid Kubernetes objects, and the HPA's metric is one the adapter rules serve."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from flexsfc.metrics.exporter import PORT_LABELS

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "autoscaling"
EXPORTED_COUNTERS = [
    "flexsfc_nf_rx_packets_total",
    "flexsfc_nf_tx_packets_total",
    "flexsfc_nf_rx_bytes_total",
    "flexsfc_nf_tx_bytes_total",
    "flexsfc_nf_sessions_created_total",
]


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


@pytest.mark.parametrize("name", ["hpa-example.yaml", "metrics-service.yaml"])
def test_core_objects_validate(name: str) -> None:
    kubernetes_validate.validate(load(name), "1.30.0", strict=True)


def adapter_names() -> dict[str, str]:
    """Exported counter -> custom metric name, evaluating the rules as prometheus-adapter does."""
    names: dict[str, str] = {}
    for rule in load("prometheus-adapter-values.yaml")["rules"]["custom"]:
        selector = re.search(r'__name__=~"([^"]+)"', rule["seriesQuery"])
        assert selector, "seriesQuery must select by __name__ regex"
        assert set(rule["resources"]["overrides"]) <= set(PORT_LABELS)
        as_ = rule["name"]["as"].replace("${1}", r"\1")
        for counter in EXPORTED_COUNTERS:
            if re.fullmatch(selector.group(1), counter):
                names[counter] = re.sub(rule["name"]["matches"], as_, counter)
    return names


def test_every_counter_has_a_per_second_metric() -> None:
    assert adapter_names() == {c: c.removesuffix("_total") + "_per_second" for c in EXPORTED_COUNTERS}


def test_hpa_uses_an_adapter_metric_per_pod() -> None:
    hpa = load("hpa-example.yaml")
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    assert metric["pods"]["metric"]["name"] in adapter_names().values()


def test_scrape_keeps_pod_labels() -> None:
    monitor = load("servicemonitor.yaml")
    assert all(endpoint["honorLabels"] for endpoint in monitor["spec"]["endpoints"])
