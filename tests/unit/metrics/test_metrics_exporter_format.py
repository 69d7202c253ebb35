"""Exporter label mapping and exposition format against an in-memory data plane.

The data plane here is a stand-in (a dict-backed object with the DataplaneAPI read methods): these
tests check naming, labels and rates only; tests/kernel/metrics checks the values against real
packets through the real data plane.
"""

from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flexsfc.agent.types import NfReplica, ReplicaPhase, dataplane_name
from flexsfc.dataplane.api import PortStats, ReplicaPort, ReplicaState
from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex, build_port_labels
from flexsfc.metrics.rates import RateSampler, port_rates, replica_rates
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Mode, Side, XcSide


@dataclass
class StaticDataplane:
    stats: dict[int, PortStats] = field(default_factory=dict)
    sides: dict[tuple[str, Side], list[ReplicaPort]] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    capacities: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    broken: bool = False

    def port_stats(self) -> dict[int, PortStats]:
        if self.broken:
            raise OSError("map gone")
        return self.stats

    def list_xcs(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(sorted({xc for xc, _ in self.sides}))}

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        return self.sides.get((xc, side), [])

    def drop_stats(self) -> dict[str, int]:
        return self.drops

    def session_count(self, xc: str | None = None) -> int:
        return self.sessions.get(xc or "", 0)

    def session_counts(self) -> dict[str, int]:
        return dict(self.sessions)

    def event_stats(self) -> dict[str, int]:
        return {}

    def session_capacities(self) -> dict[str, int]:
        return dict(self.capacities)

    def sessions_expired(self) -> int:
        return self.expired


def side(nf: str, ifname: str) -> XcSide:
    return XcSide(nf=nf, interface=ifname, network=f"net-{nf}", mode=Mode.L2, mac="02:00:00:00:00:01")


XC = CrossConnectionSpec("demo-client-fw", "demo", "ns1", side("client", "eth1"), side("fw", "in"))
DP_XC = dataplane_name(XC)  # the data plane keys cross-connections by namespace/name


def replica(name: str, nf: str, phase: ReplicaPhase, *ifaces: tuple[str, int]) -> NfReplica:
    records = tuple(
        AttachmentRecord("c", ifname, "/n", "net", f"h{index}", index, "02:00:00:00:00:01", "L2")
        for ifname, index in ifaces
    )
    return NfReplica(f"uid-{name}", "ns1", name, nf, phase, records)


REPLICAS = [
    replica("client-0", "client", ReplicaPhase.RUNNING, ("eth1", 10)),
    replica("fw-0", "fw", ReplicaPhase.RUNNING, ("in", 20), ("out", 21)),
    replica("fw-1", "fw", ReplicaPhase.TERMINATING, ("in", 30)),
    replica("fw-2", "fw", ReplicaPhase.GONE, ("in", 40)),
    replica("other-ns", "fw", ReplicaPhase.RUNNING, ("in", 50)),
]


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_port_labels_follow_the_picture() -> None:
    other = replica("x", "fw", ReplicaPhase.RUNNING, ("in", 50))
    ports, xcs = build_port_labels([XC], [*REPLICAS[:4], NfReplica(**{**other.__dict__, "namespace": "ns2"})])
    assert sorted(ports) == [10, 20, 30]  # "out" is on no xc here, GONE and other namespace left out
    assert ports[20].pod == "fw-0" and ports[20].side == "B" and ports[20].chain == "demo"
    assert xcs[DP_XC].nf(Side.A) == "client"


def test_exposition_names_and_values() -> None:
    index = PortIndex()
    index.update([XC], REPLICAS)
    dp = StaticDataplane(
        stats={
            10: PortStats(10, 5, 500, 7, 700, 1),
            20: PortStats(20, 7, 700, 5, 500, 0),
            99: PortStats(99, 1, 1, 1, 1, 0),  # not (yet) in the index
        },
        sides={
            (DP_XC, Side.A): [ReplicaPort(10, "uid-client-0")],
            (DP_XC, Side.B): [
                ReplicaPort(20, "uid-fw-0"),
                ReplicaPort(30, "uid-fw-1", ReplicaState.DRAINING),
            ],
        },
        drops={"not_ip": 3},
        sessions={DP_XC: 1},
        capacities={"ipv4": 1048576, "ipv6": 262144},
        expired=42,
    )
    exporter = Exporter.create(dp, index)  # type: ignore[arg-type]
    got = samples(generate_latest(exporter.registry))

    fw0 = frozenset(
        {
            "namespace": "ns1",
            "pod": "fw-0",
            "chain": "demo",
            "nf": "fw",
            "interface": "in",
            "cross_connection": XC.name,
            "side": "B",
        }.items()
    )
    assert got[("flexsfc_nf_rx_packets_total", fw0)] == 5
    assert got[("flexsfc_nf_rx_bytes_total", fw0)] == 500
    assert got[("flexsfc_nf_tx_packets_total", fw0)] == 7
    assert got[("flexsfc_nf_tx_bytes_total", fw0)] == 700
    xc = {"namespace": "ns1", "chain": "demo", "cross_connection": XC.name}
    assert got[("flexsfc_xc_active_sessions", frozenset(xc.items()))] == 1
    active_b = frozenset({**xc, "side": "B", "nf": "fw", "state": "active"}.items())
    draining_b = frozenset({**xc, "side": "B", "nf": "fw", "state": "draining"}.items())
    assert got[("flexsfc_xc_replicas", active_b)] == 1
    assert got[("flexsfc_xc_replicas", draining_b)] == 1
    assert got[("flexsfc_dataplane_drops_total", frozenset({"reason": "not_ip"}.items()))] == 3
    assert got[("flexsfc_exporter_unlabelled_ports", frozenset())] == 1
    assert got[("flexsfc_dataplane_session_capacity", frozenset({"family": "ipv4"}.items()))] == 1048576
    assert got[("flexsfc_dataplane_session_capacity", frozenset({"family": "ipv6"}.items()))] == 262144
    assert got[("flexsfc_dataplane_sessions_expired_total", frozenset())] == 42
    assert got[("flexsfc_dataplane_up", frozenset())] == 1


def test_unreadable_dataplane_reports_down_not_500() -> None:
    exporter = Exporter.create(StaticDataplane(broken=True), PortIndex())  # type: ignore[arg-type]
    got = samples(generate_latest(exporter.registry))
    assert got[("flexsfc_dataplane_up", frozenset())] == 0


def test_reconcile_histogram_from_report() -> None:
    from flexsfc.agent.reconciler import ReconcileReport, StepTiming

    exporter = Exporter.create(StaticDataplane(), PortIndex())  # type: ignore[arg-type]
    report = ReconcileReport(sides_updated=["x/A"], steps=[StepTiming("set_replicas", "x/A", 300_000)])
    report.total_ns = 400_000
    exporter.reconcile.observe("test", report)
    got = samples(generate_latest(exporter.registry))
    ok = frozenset({"result": "ok", "changed": "true"}.items())
    assert got[("flexsfc_agent_reconcile_duration_seconds_count", ok)] == 1
    assert got[("flexsfc_agent_reconcile_duration_seconds_sum", ok)] == pytest.approx(0.0004)
    le = frozenset({"step": "set_replicas", "le": "0.0005"}.items())
    assert got[("flexsfc_agent_reconcile_step_duration_seconds_bucket", le)] == 1


def test_rates_per_replica_and_counter_reset() -> None:
    before = {20: PortStats(20, 0, 0, 100, 1000, 0), 21: PortStats(21, 0, 0, 50, 500, 0)}
    after = {
        20: PortStats(20, 10, 100, 300, 3000, 0),
        21: PortStats(21, 0, 0, 10, 100, 0),  # went backwards: port recreated, counts from 0
        30: PortStats(30, 0, 0, 7, 7, 0),  # no earlier reading: no rate yet
    }
    rates = port_rates(before, after, 2.0)
    assert sorted(rates) == [20, 21]
    assert rates[20].rx_pps == 100 and rates[20].tx_pps == 5 and rates[21].rx_pps == 5
    ports, _ = build_port_labels([XC], REPLICAS)
    ports[21] = ports[20]  # pretend "out" is on a second xc
    per_pod = replica_rates(rates, ports)
    assert per_pod["ns1/fw-0"].rx_pps == 105 and per_pod["ns1/fw-0"].interfaces == 2

    sampler = RateSampler()
    assert sampler.sample(before, 1.0) == {}
    assert sampler.sample(after, 3.0)[20].rx_bps == 1000


def test_status_rates() -> None:
    from flexsfc.metrics.rates import status_rates

    before = {"pods": [{"name": "fw-a", "toPackets": 100, "toBytes": 1000, "fromPackets": 0, "fromBytes": 0}]}
    after = {
        "pods": [
            {"name": "fw-a", "toPackets": 300, "toBytes": 3000, "fromPackets": 50, "fromBytes": 500},
            {"name": "fw-b", "toPackets": 7},
        ]
    }
    assert status_rates(before, after, 2.0) == {
        "fw-a": {"rxPps": 100, "rxBps": 1000, "txPps": 25, "txBps": 250}
    }


def test_reconcile_history_followed_at_scrape() -> None:
    from collections import deque

    from flexsfc.agent.reconciler import ReconcileReport

    def report(ms: float) -> ReconcileReport:
        rep = ReconcileReport()
        rep.total_ns = int(ms * 1e6)
        return rep

    history: deque = deque(maxlen=3)
    exporter = Exporter.create(StaticDataplane(), PortIndex())  # type: ignore[arg-type]
    exporter.reconcile.follow(history)
    count = (
        "flexsfc_agent_reconcile_duration_seconds_count",
        frozenset({"result": "ok", "changed": "false"}.items()),
    )
    assert count not in samples(generate_latest(exporter.registry))
    history.extend([(0.0, "a", report(1)), (1.0, "b", report(2))])
    assert samples(generate_latest(exporter.registry))[count] == 2
    assert samples(generate_latest(exporter.registry))[count] == 2  # nothing new: nothing recorded twice
    history.extend([(2.0, "c", report(3)), (3.0, "d", report(4))])  # evicts "a"
    assert samples(generate_latest(exporter.registry))[count] == 4


def test_status_rates_prefer_the_counter_timestamps() -> None:
    from flexsfc.metrics.rates import status_rates

    before = {"pods": [{"name": "a", "toPackets": 0}], "countersTime": 50.0}
    after = {"pods": [{"name": "a", "toPackets": 500}], "countersTime": 50.5}
    assert status_rates(before, after, 1.0)["a"]["rxPps"] == 1000


def test_agent_exporter_labels_from_the_loop_picture() -> None:
    from flexsfc.agent.loop import AgentLoop
    from flexsfc.agent.reconciler import ReconcileReport
    from flexsfc.metrics.agent import agent_exporter

    dp = StaticDataplane(stats={20: PortStats(20, 1, 10, 2, 20, 0)})
    loop = AgentLoop(dp)  # type: ignore[arg-type]
    loop.set_cross_connections([XC])
    loop.set_replicas(REPLICAS)
    loop.reports.append((0.0, "test", ReconcileReport()))
    exporter = agent_exporter(dp, loop)  # type: ignore[arg-type]  # xcs from loop.cross_connections()
    got = samples(generate_latest(exporter.registry))
    rx = [v for (name, labels), v in got.items() if name == "flexsfc_nf_rx_packets_total"]
    assert rx == [2] and ("pod", "fw-0") in next(
        labels for (name, labels) in got if name.startswith("flexsfc_nf_")
    )
    assert (
        got[
            (
                "flexsfc_agent_reconcile_duration_seconds_count",
                frozenset({"result": "ok", "changed": "false"}.items()),
            )
        ]
        == 1
    )


def test_session_gauge_uses_one_walk_when_offered() -> None:
    class OneWalk(StaticDataplane):
        def session_counts(self) -> dict[str, int]:
            return {XC.name: 7}

        def session_count(self, xc: str | None = None) -> int:
            raise AssertionError("per-xc walk used although session_counts() exists")

    dp = OneWalk(sides={(XC.name, Side.A): []})
    got = samples(generate_latest(Exporter.create(dp, PortIndex()).registry))  # type: ignore[arg-type]
    xc = frozenset({"namespace": "", "chain": "", "cross_connection": XC.name}.items())
    assert got[("flexsfc_xc_active_sessions", xc)] == 7
