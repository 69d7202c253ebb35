"""Reconciler logic against an in-memory DataplaneAPI.

The fake stands in for the eBPF data plane only to check *which* operations the reconciler issues
(idempotence, phase -> state mapping, deletions); the real data plane is exercised by tests/e2e.
"""

import ipaddress

import pytest

from flexsfc.agent.reconciler import Reconciler, desired_neighbours
from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.dataplane.api import Neighbour, ReplicaPort, ReplicaState
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Mode, Side, XcSide


class FakeDataplane:
    def __init__(self) -> None:
        self.xcs: dict[str, int] = {}
        self.sides: dict[tuple[str, Side], list[ReplicaPort]] = {}
        self.neigh: dict[tuple[str, Side], list[Neighbour]] = {}
        self.calls: list[str] = []

    def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
        self.calls.append(f"ensure {name}")
        return self.xcs.setdefault(name, len(self.xcs) + 1)

    def delete_xc(self, name: str) -> None:
        self.calls.append(f"delete {name}")
        self.xcs.pop(name, None)
        for side in Side:
            self.sides.pop((name, side), None)

    def list_xcs(self) -> dict[str, int]:
        return dict(self.xcs)

    def set_replicas(self, xc: str, side: Side, replicas: list[ReplicaPort]) -> None:
        self.calls.append(f"set {xc}/{side}")
        self.sides[(xc, side)] = list(replicas)

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        return list(self.sides.get((xc, side), []))

    def set_neighbours(self, xc: str, side: Side, neighbours: list[Neighbour]) -> None:
        self.calls.append(f"neigh {xc}/{side}")
        self.neigh[(xc, side)] = neighbours


def _xc() -> CrossConnectionSpec:
    return CrossConnectionSpec(
        name="c-nat-fw",
        chain="c",
        namespace="default",
        side_a=XcSide(
            "nat", "eth1", "n1", Mode.L3, "02:00:00:00:00:01", (ipaddress.ip_interface("10.0.0.1/24"),)
        ),
        side_b=XcSide("fw", "eth1", "n2", Mode.L2, "02:00:00:00:00:02"),
    )


def _replica(uid: str, nf: str, ifindex: int, phase: ReplicaPhase = ReplicaPhase.RUNNING) -> NfReplica:
    rec = AttachmentRecord(
        container_id=uid,
        ifname="eth1",
        netns="/run/netns/x",
        network="n",
        host_ifname=f"fx{ifindex}",
        host_ifindex=ifindex,
        mac="02:00:00:00:00:01",
        mode="L2",
    )
    return NfReplica(uid=uid, namespace="default", pod_name=uid, nf=nf, phase=phase, interfaces=(rec,))


def test_phases_map_to_states_and_second_pass_changes_nothing() -> None:
    dp = FakeDataplane()
    rec = Reconciler(dp)
    replicas = [
        _replica("u2", "fw", 12),
        _replica("u1", "fw", 11, ReplicaPhase.TERMINATING),
        _replica("u3", "fw", 13, ReplicaPhase.PENDING),
        _replica("u4", "fw", 14, ReplicaPhase.GONE),
        _replica("u5", "nat", 21),
    ]
    first = rec.reconcile([_xc()], replicas)
    assert first.xcs_created == ["c-nat-fw"]
    assert dp.sides[("c-nat-fw", Side.B)] == [
        ReplicaPort(11, "u1", ReplicaState.DRAINING),
        ReplicaPort(12, "u2", ReplicaState.ACTIVE),
    ]
    assert dp.sides[("c-nat-fw", Side.A)] == [ReplicaPort(21, "u5", ReplicaState.ACTIVE)]
    assert dp.neigh[("c-nat-fw", Side.A)] == [Neighbour("10.0.0.1", "02:00:00:00:00:01")]
    assert sorted(first.ports_attached) == [11, 12, 21]
    assert {s.step for s in first.steps} >= {"read", "ensure_xc", "set_replicas", "set_neighbours"}

    dp.calls.clear()
    second = rec.reconcile([_xc()], list(reversed(replicas)))
    assert not second.changed
    assert dp.calls == []


def test_restart_converges_from_existing_state_and_removes_stale_xcs() -> None:
    dp = FakeDataplane()
    Reconciler(dp).reconcile([_xc()], [_replica("u1", "fw", 11)])
    dp.ensure_xc("stale")
    dp.calls.clear()
    report = Reconciler(dp).reconcile([_xc()], [_replica("u1", "fw", 11)])
    assert report.xcs_deleted == ["stale"]
    assert not any(c.startswith("set ") for c in dp.calls)  # replica sets already right


def test_gone_replica_leaves_first_and_is_removed_once_absent() -> None:
    dp = FakeDataplane()
    rec = Reconciler(dp)
    rec.reconcile([_xc()], [_replica("u1", "fw", 11), _replica("u2", "fw", 12)])
    gone = rec.reconcile([_xc()], [_replica("u1", "fw", 11), _replica("u2", "fw", 12, ReplicaPhase.GONE)])
    assert gone.ports_detached == []
    assert dp.sides[("c-nat-fw", Side.B)] == [
        ReplicaPort(11, "u1", ReplicaState.ACTIVE),
        ReplicaPort(12, "u2", ReplicaState.LEAVING),
    ]
    absent = rec.reconcile([_xc()], [_replica("u1", "fw", 11)])
    assert absent.ports_detached == [12]
    assert [p.ifindex for p in dp.sides[("c-nat-fw", Side.B)]] == [11]


def test_gone_replica_never_attached_is_not_attached() -> None:
    dp = FakeDataplane()
    report = Reconciler(dp).reconcile([_xc()], [_replica("u1", "fw", 11, ReplicaPhase.GONE)])
    assert report.ports_attached == []
    assert dp.sides.get(("c-nat-fw", Side.B), []) == []


def test_a_port_the_data_plane_holds_as_leaving_stays_leaving() -> None:
    """The CNI plugin marks a pod's ports leaving on DEL, before the API says the pod is gone: the
    reconciler neither fights it (running -> active again) nor churns over it."""
    dp = FakeDataplane()
    rec = Reconciler(dp)
    picture = [_replica("u1", "fw", 11), _replica("u2", "fw", 12, ReplicaPhase.TERMINATING)]
    rec.reconcile([_xc()], picture)
    dp.sides[("c-nat-fw", Side.B)][0] = ReplicaPort(11, "u1", ReplicaState.LEAVING)  # as the plugin does
    dp.calls.clear()
    report = rec.reconcile([_xc()], picture)
    assert not report.changed and dp.calls == []
    assert dp.sides[("c-nat-fw", Side.B)][0].state is ReplicaState.LEAVING


@pytest.mark.parametrize(("addr", "ip"), [("10.1.0.1/24", "10.1.0.1"), ("fd00::1/64", "fd00::1")])
def test_neighbours_strip_prefix(addr: str, ip: str) -> None:
    side = XcSide("a", "eth1", "n", Mode.L3, "02:AA:00:00:00:01", (ipaddress.ip_interface(addr),))
    assert desired_neighbours(side) == [Neighbour(ip, "02:aa:00:00:00:01")]
