"""`flexsfc autoscale --prometheus`: the prometheus-adapter query, and answers recorded from a real server.

data/prometheus_api_responses.json holds what Debian's Prometheus 2.42 answered to the query this
module sends, for series scraped with honor_labels and without (NF labels renamed exported_*), and
to a malformed query; a loopback HTTP server replays it, so the whole path (query string, HTTP, JSON,
per-pod values, missing pods, errors) runs without a Prometheus here.
tests/e2e/test_prometheus_real.py runs the same code against a live server and real traffic.
"""

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from flexsfc.agent.types import ReplicaPhase
from flexsfc.autoscale.local import LocalAutoscaler, ReplicaReading, TargetReading, local_spec
from flexsfc.autoscale.prometheus import (
    ADAPTER_METRICS_QUERY,
    PrometheusClient,
    PrometheusError,
    PrometheusPodRates,
    adapter_query,
    check_window,
    parse_vector,
)
from flexsfc.cli.autoscale import autoscale

REPO = Path(__file__).resolve().parents[3]
RECORDED = json.loads((Path(__file__).parent / "data" / "prometheus_api_responses.json").read_text())
PODS = [("ns1", "fw-0"), ("ns1", "fw-1"), ("ns1", "fw-2")]


class Replay(BaseHTTPRequestHandler):
    """Answers /api/v1/query from the recording: the recorded answer for the recorded query."""

    queries: list[str] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        query = form["query"][0]
        self.queries.append(query)
        status, answer = RECORDED["bad_query"]["status"], RECORDED["bad_query"]["response"]
        if self.path == "/api/v1/query" and query == RECORDED["honor_labels"]["query"]:
            status, answer = 200, RECORDED["honor_labels"]["response"]
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def replay() -> Iterator[str]:
    Replay.queries = []
    server = HTTPServer(("127.0.0.1", 0), Replay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_query_template_is_the_adapter_rule() -> None:
    values = yaml.safe_load((REPO / "deploy" / "autoscaling" / "prometheus-adapter-values.yaml").read_text())
    [rule] = values["rules"]["custom"]
    assert rule["metricsQuery"] == ADAPTER_METRICS_QUERY


def test_query_is_what_the_adapter_sends_for_the_pods() -> None:
    source = PrometheusPodRates.at("http://unused", window="10s")
    assert source.queries(PODS) == {"ns1": RECORDED["honor_labels"]["query"]}
    # The default window is the rule's; names are escaped as RE2 literals inside a PromQL string.
    query = adapter_query("m", "ns", ["b.x", "a"])
    assert 'm{namespace="ns",pod=~"a|b\\\\.x",exported_pod=""}[1m]' in query
    assert 'm{exported_namespace=~"ns",exported_pod=~"a|b\\\\.x"}[1m]' in query
    assert query.startswith("sum by (pod) (") and "<<" not in query
    # One query per namespace.
    assert source.queries([("a", "p"), ("b", "p"), ("a", "q")]).keys() == {"a", "b"}
    with pytest.raises(ValueError, match="unsupported"):
        adapter_query("m", "ns", ["a"], template="sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.Other>>)")


def test_recorded_answer_gives_per_pod_rates(replay: str) -> None:
    rates = PrometheusPodRates.at(replay, window="10s").rates(PODS)
    assert Replay.queries == [RECORDED["honor_labels"]["query"]]
    assert rates.keys() == {("ns1", "fw-0"), ("ns1", "fw-1")}  # fw-2 has no series: no sample
    assert rates[("ns1", "fw-0")] == pytest.approx(150)
    assert rates[("ns1", "fw-1")] == pytest.approx(90)


def test_error_answers_raise(replay: str) -> None:
    with pytest.raises(PrometheusError, match="bad_data: invalid parameter"):
        PrometheusClient(replay).query("sum(rate(flexsfc_nf_rx_packets_total[1x]))")  # HTTP 400 + JSON
    with pytest.raises(PrometheusError, match="bad_data"):
        parse_vector(RECORDED["bad_query"]["response"])
    assert RECORDED["bad_query"]["status"] == 400
    with pytest.raises(PrometheusError, match="instant vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}})
    with pytest.raises(PrometheusError):
        # Nothing listens there (the replay server is gone after its own test).
        PrometheusClient("http://127.0.0.1:9", timeout=2).query("up")


def test_both_label_shapes_answer_the_same() -> None:
    """With or without honor_labels (NF labels renamed exported_*), one query, the same per-pod rates."""
    assert RECORDED["exported_labels"]["query"] == RECORDED["honor_labels"]["query"]
    honoured = parse_vector(RECORDED["honor_labels"]["response"])
    assert parse_vector(RECORDED["exported_labels"]["response"]) == honoured
    assert honoured == {"fw-0": pytest.approx(150), "fw-1": pytest.approx(90)}


def test_nan_values_are_no_sample() -> None:
    answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"namespace": "n", "pod": "a"}, "value": [1, "NaN"]},
                {"metric": {"namespace": "n", "pod": "b"}, "value": [1, "+Inf"]},
                {"metric": {"namespace": "n", "pod": "c"}, "value": [1, "12.5"]},
            ],
        },
    }
    assert parse_vector(answer) == {"c": 12.5}


@pytest.mark.parametrize("window", ["10s", "1m", "1m30s", "500ms", "2h"])
def test_windows_accepted(window: str) -> None:
    assert check_window(window) == window


@pytest.mark.parametrize("window", ["", "1x", "m", "10", "1.5m", "-1m"])
def test_windows_rejected(window: str) -> None:
    with pytest.raises(ValueError):
        check_window(window)


class StaticTarget:
    name = "fw"

    def __init__(self) -> None:
        self.scaled: list[int] = []

    def read(self) -> TargetReading:
        return TargetReading(
            2,
            (
                ReplicaReading("fw-0", ReplicaPhase.RUNNING, 0, "ns1"),
                ReplicaReading("fw-1", ReplicaPhase.RUNNING, 0, "ns1"),
            ),
        )

    def scale(self, replicas: int) -> None:
        self.scaled.append(replicas)


def test_autoscaler_decides_on_prometheus_rates(replay: str) -> None:
    """The counters of the target are ignored: the pps are Prometheus' (150 and 90, average 120)."""
    target = StaticTarget()
    source = PrometheusPodRates.at(replay, window="10s")
    source_pods: list[list[tuple[str, str]]] = []

    class Recording:
        def rates(self, pods: Any, at: float | None = None) -> dict[tuple[str, str], float]:
            source_pods.append(list(pods))
            # The recording answers for fw-0..fw-2: ask as the adapter would for those pods.
            return {k: v for k, v in source.rates(PODS, at).items() if k in source_pods[-1]}

    scaler = LocalAutoscaler(target, local_spec(60, 1, 8), pod_rates=Recording())
    tick = scaler.step()  # no baseline period needed: Prometheus already has the rate
    assert source_pods == [[("ns1", "fw-0"), ("ns1", "fw-1")]]
    assert tick.pps == {"fw-0": pytest.approx(150), "fw-1": pytest.approx(90)}
    assert tick.desired == 4 and target.scaled == [4]  # ceil(2 x 120 / 60)


def test_cli_rejects_a_bad_window_before_reaching_the_runtime(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        autoscale,
        [
            "fw",
            "--target-pps",
            "100",
            "--prometheus",
            "http://127.0.0.1:9",
            "--rate-window",
            "1x",
            "--state-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "rate window" in result.output
