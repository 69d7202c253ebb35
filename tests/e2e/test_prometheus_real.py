"""A real Prometheus server scrapes the local runtime while traffic runs; its rates match the traffic.

Everything is real: Debian's `prometheus` binary (its own config, data directory and a free loopback
port, never the packaged service or :9090), the local runtime started as a user does (`flexsfc up
--metrics-port`, a private state directory, pin directory and namespace prefix), a transparent-bridge
firewall NF with three replicas between a client and a server, and the traffic generator's paced UDP
flows from the client pod, echoed by the server. Which replica serves each flow is read from the data
plane's session table; the traffic tool reports how many datagrams each flow sent and got back.

Checked through Prometheus' HTTP API:
- per replica, `rate(flexsfc_nf_rx_packets_total{interface="eth1"}[10s])` equals the pps the traffic
  tool sent on the flows that replica serves (within 3 %), and the counter's increase over the run
  equals the datagrams it sent (a few stray packets aside);
- the prometheus-adapter query of `flexsfc autoscale --prometheus` (all the pod's interfaces: requests
  in on eth1, echoes in on eth2) gives the same per-replica pps, and `flexsfc autoscale --prometheus URL`
  scales the firewall on it.
"""

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_local import FLEXSFC, REPO, LocalRuntime, bridge_chain_manifests, private_runtime

from flexsfc.autoscale.prometheus import PrometheusPodRates
from flexsfc.local.scenario import PROTO_UDP, TrafficRun, chain_ends, flow_owners, xc_between
from flexsfc.model.loader import load_plan

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="Debian's prometheus package is not installed (scripts/setup.sh installs it)",
    ),
]

TRAFFIC_PORT = 9000
FLOWS, FLOW_PPS = 24, 25.0  # 600 datagrams/s in, 600 echoes back
TRAFFIC_SECONDS = 26.0
RATE_FROM, RATE_TO = 2.0, 12.0  # the rate window, seconds after the traffic started
AUTOSCALE_AT = 14.0  # `flexsfc autoscale --prometheus` runs from here (after the rate window)
SCRAPE_SECONDS = 1.0
MONITORING = REPO / "deploy" / "monitoring"
ALERT_RULES = MONITORING / "flexsfc-alerts.rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard-chain-overview.json"
RATE_TOLERANCE = 0.03

MANIFESTS = bridge_chain_manifests("prom-chain", "pr", "10.71.1.1", "10.71.1.2", firewall_replicas=3)


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (never Prometheus' default 9090)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 9090:
            return port


class PrometheusServer:
    """A Prometheus process of this test: its own config, data directory and loopback port.

    Stopped by the PID it was started with (SIGTERM, then SIGKILL) and its directory removed, whatever
    happens; never the packaged service.
    """

    def __init__(
        self, targets: list[str], scrape_seconds: float = SCRAPE_SECONDS, rule_files: tuple[Path, ...] = ()
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="flexsfc-prometheus-"))
        self.targets = targets
        self.rule_files = rule_files
        self.scrape_seconds = scrape_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        interval = f"{int(self.scrape_seconds * 1000)}ms"
        config: dict[str, Any] = {
            "rule_files": [str(path) for path in self.rule_files],
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": "flexsfc-local",
                    # As on a cluster (deploy/autoscaling): keep the NF pod's namespace/pod labels.
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        path = self.dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        assert PROMETHEUS is not None
        config = self.write_config()
        if shutil.which("promtool") is not None:
            check = subprocess.run(
                ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
            )
            assert check.returncode == 0, check.stdout + check.stderr
        for _attempt in range(3):  # the free port may be taken between the probe and the bind
            self.port = free_loopback_port()
            log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply,
                ):
                    if reply.status == 200:
                        return self
                time.sleep(0.1)
            self.stop(remove=False)
        raise AssertionError(f"prometheus did not become ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]
        return ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url}: {exc.code} {exc.read()[:500]!r}") from exc
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, promql: str, at: float) -> dict[tuple[str, ...], float]:
        """Instant query at wall time `at`: {label values of the series (sorted by name): value}."""
        data = self.api("query", query=promql, time=f"{at:.3f}")
        assert data["resultType"] == "vector", data
        return {
            tuple(value for _, value in sorted(sample["metric"].items())): float(sample["value"][1])
            for sample in data["result"]
        }

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Until every target was scraped successfully."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.api("targets")["activeTargets"]
            if active and all(t["health"] == "up" for t in active):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not up: {active}\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, remove: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # by the PID we started, nothing else
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def prometheus(targets: list[str], rule_files: tuple[Path, ...] = ()) -> Iterator[PrometheusServer]:
    server = PrometheusServer(targets, rule_files=rule_files)
    try:
        yield server.start()
    finally:
        server.stop()


@dataclass
class Run:
    """What the module's one traffic run produced."""

    rt: LocalRuntime
    prom: PrometheusServer
    started: float  # wall time the traffic client started sending
    ended: float
    report: dict[str, Any]
    owners: dict[int, str]  # client UDP port -> firewall pod serving that flow
    pods: list[str]  # firewall pods when the traffic started
    autoscale: subprocess.CompletedProcess[str]

    def flow_pps(self, flow: dict[str, Any], count: str = "sent") -> float:
        # The client sends for exactly --duration seconds (its report's durationSeconds also counts
        # the half second it waits for the last echoes).
        return float(flow[count]) / TRAFFIC_SECONDS

    def expected_pps(self, pod: str, *counts: str) -> float:
        """pps the traffic tool sent (or got back) on the flows `pod` serves."""
        return sum(
            self.flow_pps(f, count)
            for f in self.report["udp"]
            if self.owners.get(f["port"]) == pod
            for count in counts
        )


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("prom")
    with private_runtime(tmp, "e2e-prom", "p") as rt:
        yield from _traffic_run(rt, tmp)


def _traffic_run(rt: LocalRuntime, tmp: Path) -> Iterator[Run]:
    config = rt.config
    manifests = tmp / "chain"
    manifests.mkdir()
    (manifests / "chain.yaml").write_text(MANIFESTS)
    metrics_port = free_loopback_port()
    traffic: TrafficRun | None = None
    try:
        rt.cli("up", str(manifests), "--metrics-port", str(metrics_port))
        plan = load_plan(str(manifests))
        with prometheus([f"127.0.0.1:{metrics_port}"], rule_files=(ALERT_RULES,)) as prom:
            prom.wait_scraped()
            pods = sorted(p.name for p in rt.pods("firewall"))
            assert len(pods) == 3, pods
            time.sleep(2 * SCRAPE_SECONDS)  # a flat sample of every series before the traffic
            traffic = TrafficRun(
                config,
                chain_ends(plan),
                port=TRAFFIC_PORT,
                tcp=0,
                udp=FLOWS,
                udp_pps=FLOW_PPS,
                new_flows=0,
                duration=TRAFFIC_SECONDS,
            )
            traffic.start()
            started = traffic.started_ns / 1e9
            _sleep_until(started + RATE_FROM)
            owners = {
                port: pod
                for (proto, port), pod in flow_owners(
                    config, xc_between(plan, "client", "firewall"), "firewall", TRAFFIC_PORT
                ).items()
                if proto == PROTO_UDP
            }
            _sleep_until(started + AUTOSCALE_AT)
            # 3 replicas at ~400 pps each against a target of 100: the HPA asks for 12, --max caps at 4.
            autoscale = subprocess.run(
                [
                    FLEXSFC,
                    "autoscale",
                    "firewall",
                    "--state-dir",
                    config.state_dir,
                    "--prometheus",
                    prom.url,
                    "--rate-window",
                    "10s",
                    "--target-pps",
                    "100",
                    "--max",
                    "4",
                    "--period",
                    "1",
                    "--duration",
                    "2.5",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            report = traffic.stop()
            traffic = None
            started = report["startedNs"] / 1e9  # when the client itself started sending
            ended = started + TRAFFIC_SECONDS
            time.sleep(3 * SCRAPE_SECONDS)  # the final counters scraped
            yield Run(rt, prom, started, ended, report, owners, pods, autoscale)
    finally:
        if traffic is not None:
            traffic.close()


def test_every_flow_was_served_and_echoed(run: Run) -> None:
    flows = run.report["udp"]
    assert len(flows) == FLOWS
    assert {f["port"] for f in flows} <= set(run.owners), "a flow has no session-table entry"
    assert set(run.owners.values()) <= set(run.pods)
    sent = sum(f["sent"] for f in flows)
    assert sent > 0.9 * FLOWS * FLOW_PPS * TRAFFIC_SECONDS
    assert sum(f["received"] for f in flows) >= 0.99 * sent


def test_prometheus_rate_per_replica_matches_traffic(run: Run) -> None:
    window = int(RATE_TO - RATE_FROM)
    at = run.started + RATE_TO
    got = run.prom.query(
        f'sum by (pod) (rate(flexsfc_nf_rx_packets_total{{nf="firewall",interface="eth1"}}[{window}s]))', at
    )
    rates = {labels[0]: value for labels, value in got.items()}
    assert set(rates) == set(run.pods)
    lines = []
    for pod in run.pods:
        expected = run.expected_pps(pod, "sent")
        lines.append(f"{pod}: prometheus {rates[pod]:.1f} pps, traffic tool {expected:.1f} pps")
        assert abs(rates[pod] - expected) <= max(RATE_TOLERANCE * expected, 2.0), lines
    print("\n".join(lines))
    total = sum(run.flow_pps(f) for f in run.report["udp"])
    assert abs(sum(rates.values()) - total) <= RATE_TOLERANCE * total


def test_prometheus_counter_increase_equals_datagrams_sent(run: Run) -> None:
    query = 'sum by (pod) (flexsfc_nf_rx_packets_total{nf="firewall",interface="eth1"})'
    before = {labels[0]: v for labels, v in run.prom.query(query, run.started - 0.5).items()}
    after = {labels[0]: v for labels, v in run.prom.query(query, run.ended + 2 * SCRAPE_SECONDS).items()}
    for pod in run.pods:
        sent = sum(f["sent"] for f in run.report["udp"] if run.owners.get(f["port"]) == pod)
        increase = after[pod] - before.get(pod, 0.0)
        # Beyond the datagrams only the client's own stray frames (IPv6 ND/MLD) may reach a replica.
        assert sent <= increase <= sent + max(10, 0.002 * sent), (pod, sent, increase)


def test_adapter_query_gives_the_replicas_pps(run: Run) -> None:
    """`flexsfc autoscale --prometheus`'s query (prometheus-adapter's rule) on the real server."""
    source = PrometheusPodRates.at(run.prom.url, window=f"{int(RATE_TO - RATE_FROM)}s")
    state = run.rt.state()
    assert state is not None
    namespaces = {p.name: p.namespace for p in state.pods}
    got = source.rates([(namespaces[pod], pod) for pod in run.pods], at=run.started + RATE_TO)
    for pod in run.pods:
        # Every interface of the replica: the requests in on eth1 and the server's echoes in on eth2.
        expected = run.expected_pps(pod, "sent", "received")
        assert abs(got[(namespaces[pod], pod)] - expected) <= max(RATE_TOLERANCE * expected, 4.0), (
            pod,
            got,
            expected,
        )


def test_autoscale_cli_scales_on_prometheus(run: Run) -> None:
    out = run.autoscale
    print(out.stderr + out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pps from http://127.0.0.1:" in out.stderr
    assert "no decision" not in out.stderr, out.stderr
    first = out.stdout.splitlines()[0]
    assert "replicas 3 -> 4" in first, out.stdout
    # The per-replica pps it printed are the Prometheus rates of the three replicas (~2 x 200 pps).
    printed = [float(v) for v in first.split("[", 1)[1].split("]", 1)[0].split()]
    expected = sorted(run.expected_pps(pod, "sent", "received") for pod in run.pods)
    assert len(printed) == 3
    for value, want in zip(sorted(printed), expected, strict=True):
        assert abs(value - want) <= max(0.05 * want, 5.0), (printed, expected)
    state = run.rt.state()
    assert state is not None and state.deployments
    assert any(d.nf == "firewall" and d.desired == 4 for d in state.deployments.values())


def test_alert_rules_evaluate_on_the_runtime_series(run: Run) -> None:
    """deploy/monitoring's rules, loaded by the real server, evaluate without errors and stay quiet."""
    groups = run.prom.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == ALERT_RULES.read_text().count("- alert:")
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    # Nothing is wrong in this run: no alert fires (each also waits minutes first), and none is even
    # pending but a port seen for a moment before the labels knew it (the scale-out to 4).
    alerts = run.prom.api("alerts")["alerts"]
    assert [a for a in alerts if a["labels"]["alertname"] != "FlexsfcPortsWithoutRecords"] == [], alerts
    assert all(a["state"] == "pending" for a in alerts), alerts


def test_dashboard_queries_return_series(run: Run) -> None:
    """Every query of the Grafana dashboard, its variables set to "All", has data from the runtime."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            series = var["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            exprs.append((f"variable {var['name']}", series))
    at = run.started + RATE_TO
    empty = []
    for title, expr in exprs:
        expr = expr.replace("$__rate_interval", f"{int(RATE_TO - RATE_FROM)}s")
        expr = re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)  # "All" of a multi-value variable
        if not run.prom.query(expr, at):
            empty.append(f"{title}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
