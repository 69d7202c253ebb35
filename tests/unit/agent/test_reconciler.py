"""Reconciler logic against an in-memory DataplaneAPI.

The fake stands in for the eBPF data plane only to check *which* operations the reconciler issues
(idempotence, phase -> state mapping, deletions); the real data plane is exercised by tests/e2e.
"""

import ipaddress

import pytest

from flexsfc.agent.desired import desired_neighbours
from flexsfc.agent.reconciler import Reconciler
from flexsfc.agent.types import NfReplica, ReplicaPhase, Topology
from flexsfc.dataplane.api import Neighbour, RemoteEndpoint, ReplicaPort, ReplicaState
from flexsfc.dataplane.naming import xc_key
from flexsfc.dataplane.tunnels import remote_key
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, Side, XcSide
from flexsfc.testing.memory import MemoryDataplane


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

    def rename_xc(self, name: str, new_name: str) -> None:
        self.calls.append(f"rename {name} {new_name}")
        self.xcs[new_name] = self.xcs.pop(name)
        for side in Side:
            if (name, side) in self.sides:
                self.sides[(new_name, side)] = self.sides.pop((name, side))
            if (name, side) in self.neigh:
                self.neigh[(new_name, side)] = self.neigh.pop((name, side))

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

    def neighbours(self, xc: str, side: Side, *, learned: bool = False) -> list[Neighbour]:
        return [] if learned else list(self.neigh.get((xc, side), []))


XC = "default/c-nat-fw"  # the data plane names cross-connections "namespace/name"


def _xc(namespace: str = "default", name: str = "c-nat-fw") -> CrossConnectionSpec:
    return CrossConnectionSpec(
        name=name,
        chain="c",
        namespace=namespace,
        side_a=XcSide(
            "nat", "eth1", "n1", Mode.L3, "02:00:00:00:00:01", (ipaddress.ip_interface("10.0.0.1/24"),)
        ),
        side_b=XcSide("fw", "eth1", "n2", Mode.L2, "02:00:00:00:00:02"),
    )


def _replica(
    uid: str, nf: str, ifindex: int, phase: ReplicaPhase = ReplicaPhase.RUNNING, namespace: str = "default"
) -> NfReplica:
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
    return NfReplica(uid=uid, namespace=namespace, pod_name=uid, nf=nf, phase=phase, interfaces=(rec,))


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
    assert first.xcs_created == [XC]
    assert dp.sides[(XC, Side.B)] == [
        ReplicaPort(11, "u1", ReplicaState.DRAINING),
        ReplicaPort(12, "u2", ReplicaState.ACTIVE),
    ]
    assert dp.sides[(XC, Side.A)] == [ReplicaPort(21, "u5", ReplicaState.ACTIVE)]
    assert dp.neigh[(XC, Side.A)] == [Neighbour("10.0.0.1", "02:00:00:00:00:01")]
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
    assert dp.sides[(XC, Side.B)] == [
        ReplicaPort(11, "u1", ReplicaState.ACTIVE),
        ReplicaPort(12, "u2", ReplicaState.LEAVING),
    ]
    absent = rec.reconcile([_xc()], [_replica("u1", "fw", 11)])
    assert absent.ports_detached == [12]
    assert [p.ifindex for p in dp.sides[(XC, Side.B)]] == [11]


def test_gone_replica_never_attached_is_not_attached() -> None:
    dp = FakeDataplane()
    report = Reconciler(dp).reconcile([_xc()], [_replica("u1", "fw", 11, ReplicaPhase.GONE)])
    assert report.ports_attached == []
    assert dp.sides.get((XC, Side.B), []) == []


def test_a_port_the_data_plane_holds_as_leaving_stays_leaving() -> None:
    """The CNI plugin marks a pod's ports leaving on DEL, before the API says the pod is gone: the
    reconciler neither fights it (running -> active again) nor churns over it."""
    dp = FakeDataplane()
    rec = Reconciler(dp)
    picture = [_replica("u1", "fw", 11), _replica("u2", "fw", 12, ReplicaPhase.TERMINATING)]
    rec.reconcile([_xc()], picture)
    dp.sides[(XC, Side.B)][0] = ReplicaPort(11, "u1", ReplicaState.LEAVING)  # as the plugin does
    dp.calls.clear()
    report = rec.reconcile([_xc()], picture)
    assert not report.changed and dp.calls == []
    assert dp.sides[(XC, Side.B)][0].state is ReplicaState.LEAVING


@pytest.mark.parametrize(("addr", "ip"), [("10.1.0.1/24", "10.1.0.1"), ("fd00::1/64", "fd00::1")])
def test_neighbours_strip_prefix(addr: str, ip: str) -> None:
    side = XcSide("a", "eth1", "n", Mode.L3, "02:AA:00:00:00:01", (ipaddress.ip_interface(addr),))
    assert desired_neighbours(side) == [Neighbour(ip, "02:aa:00:00:00:01")]


# ---- tenancy: namespaced names, chain settings per namespace, conflicts ------------------------------


def test_same_name_in_two_namespaces_is_two_cross_connections_and_a_second_pass_changes_nothing() -> None:
    dp = FakeDataplane()
    rec = Reconciler(dp)
    xcs = [_xc("team-a"), _xc("team-b")]
    replicas = [
        _replica("a-nat", "nat", 11, namespace="team-a"),
        _replica("a-fw", "fw", 12, namespace="team-a"),
        _replica("b-nat", "nat", 21, namespace="team-b"),
        _replica("b-fw", "fw", 22, namespace="team-b"),
    ]
    first = rec.reconcile(xcs, replicas)
    assert sorted(first.xcs_created) == ["team-a/c-nat-fw", "team-b/c-nat-fw"]
    assert [p.ifindex for p in dp.sides[("team-a/c-nat-fw", Side.B)]] == [12]
    assert [p.ifindex for p in dp.sides[("team-b/c-nat-fw", Side.B)]] == [22]
    dp.calls.clear()
    second = rec.reconcile(list(reversed(xcs)), list(reversed(replicas)))
    assert not second.changed and dp.calls == []


def test_chain_settings_are_looked_up_by_namespace_and_chain() -> None:
    sizes: dict[str, int | None] = {}

    class Sizes(FakeDataplane):
        def ensure_xc(self, name: str, *, maglev_table_size: int | None = None) -> int:
            sizes[name] = maglev_table_size
            return super().ensure_xc(name, maglev_table_size=maglev_table_size)

    settings = {("team-a", "c"): ChainSettings(251), ("team-b", "c"): ChainSettings(1021)}
    Reconciler(Sizes()).reconcile([_xc("team-a"), _xc("team-b")], [], chain_settings=settings)
    assert sizes == {"team-a/c-nat-fw": 251, "team-b/c-nat-fw": 1021}
    # A front end holding one namespace only may still key by chain name.
    sizes.clear()
    Reconciler(Sizes()).reconcile([_xc("team-a")], [], chain_settings={"c": ChainSettings(251)})
    assert sizes == {"team-a/c-nat-fw": 251}


def _fw_contender() -> CrossConnectionSpec:
    """A cross-connection of chain d in "default" whose side A is the fw interface _xc() has on side B."""
    return CrossConnectionSpec(
        name="d-fw-nat",
        chain="d",
        namespace="default",
        side_a=XcSide("fw", "eth1", "n2", Mode.L2, "02:00:00:00:00:03"),
        side_b=XcSide("nat", "eth2", "n3", Mode.L2, "02:00:00:00:00:04"),
    )


def test_a_port_wanted_by_two_sides_stays_with_its_holder_and_is_reported_on_every_pass() -> None:
    dp = FakeDataplane()
    rec = Reconciler(dp)
    first_xc = _xc(name="c-nat-fw")
    rec.reconcile([first_xc], [_replica("u1", "fw", 11), _replica("n1", "nat", 21)])
    # A second cross-connection of the same namespace whose side A is the same NF interface.
    second_xc = _fw_contender()
    picture = [_replica("u1", "fw", 11), _replica("n1", "nat", 21)]
    for xcs in ([first_xc, second_xc], [second_xc, first_xc], [first_xc, second_xc]):
        report = rec.reconcile(xcs, picture)  # conflicts are reported, not raised
        assert [p.ifindex for p in dp.sides[(XC, Side.B)]] == [11], "the holder keeps the port"
        assert dp.sides.get(("default/d-fw-nat", Side.A), []) == []
        assert len(report.conflicts) == 2 and set(report.conflicts) <= set(report.errors)
        assert not report.failed
        assert all("port 11 (default/u1 eth1)" in c for c in report.conflicts)
        assert {c.split(":")[0] for c in report.conflicts} == {XC, "default/d-fw-nat"}
        assert not report.sides_updated


def test_a_contested_port_nobody_holds_goes_to_nobody() -> None:
    dp = FakeDataplane()
    other = _fw_contender()
    report = Reconciler(dp).reconcile([_xc(), other], [_replica("u1", "fw", 11)])
    assert dp.sides.get((XC, Side.B), []) == [] and dp.sides.get(("default/d-fw-nat", Side.A), []) == []
    assert all("attached to none" in c for c in report.conflicts) and len(report.conflicts) == 2


def test_a_bare_name_from_an_older_agent_is_renamed_in_place() -> None:
    dp = FakeDataplane()
    dp.ensure_xc("c-nat-fw")  # the pinned state of an agent from before namespaced names
    dp.set_replicas("c-nat-fw", Side.B, [ReplicaPort(11, "u1")])
    dp.calls.clear()
    report = Reconciler(dp).reconcile([_xc()], [_replica("u1", "fw", 11)])
    assert report.xcs_renamed == [f"c-nat-fw -> {XC}"]
    assert dp.calls[0] == f"rename c-nat-fw {XC}"
    assert not report.xcs_created and not report.xcs_deleted
    assert f"set {XC}/{Side.B}" not in dp.calls, "the port moved with the entry"


def test_a_bare_name_two_namespaces_use_is_rebuilt_not_guessed() -> None:
    dp = FakeDataplane()
    dp.ensure_xc("c-nat-fw")
    report = Reconciler(dp).reconcile([_xc("team-a"), _xc("team-b")], [])
    assert report.xcs_deleted == ["c-nat-fw"] and not report.xcs_renamed
    assert sorted(report.xcs_created) == ["team-a/c-nat-fw", "team-b/c-nat-fw"]


def test_long_names_fit_the_registry_key_and_stay_distinct() -> None:
    namespace, name = "n" * 63, "x" * 253
    key = xc_key(namespace, name)
    assert len(key.encode()) <= 255 and key.startswith(f"{namespace}/xxx") and "~" in key
    assert xc_key(namespace, name) == key  # stable
    assert xc_key(namespace, name[:-1] + "y") != key
    assert xc_key("default", "c-nat-fw") == "default/c-nat-fw"
    with pytest.raises(ValueError):
        xc_key("", "x")


def test_topology_lists_replicas_of_other_nodes_as_remote_and_programs_the_tunnel() -> None:

    dp = MemoryDataplane()
    topology = Topology("n1", {"n1": "10.250.0.1", "n2": "10.250.0.2"}, "flexsfc-vx")
    here = _replica("u1", "fw", 11)
    there = NfReplica("u2", "default", "u2", "fw", ReplicaPhase.RUNNING, node="n2")  # no records: not here
    nowhere = NfReplica("u3", "default", "u3", "fw", ReplicaPhase.RUNNING, node="n3")  # n3 has no address
    report = Reconciler(dp).reconcile(
        [_xc()], [here, there, nowhere, _replica("u5", "nat", 21)], topology=topology
    )
    assert dp.sides[(XC, Side.B)] == [
        ReplicaPort(11, "u1", ReplicaState.ACTIVE),
        ReplicaPort(remote_key(XC, 1, "u2"), "u2", ReplicaState.ACTIVE, RemoteEndpoint("n2", "10.250.0.2")),
    ]
    assert dp.tunnel == "flexsfc-vx" and dp.nodes == {"n1": "10.250.0.1", "n2": "10.250.0.2"}
    assert len(report.unplaced) == 1 and "'n3'" in report.unplaced[0] and not report.failed
    # The same picture again changes nothing (remote ports compare equal).
    again = Reconciler(dp).reconcile(
        [_xc()], [here, there, nowhere, _replica("u5", "nat", 21)], topology=topology
    )
    assert again.sides_updated == []


def test_an_l2_side_answers_for_the_first_l3_nf_beyond_it_in_both_directions() -> None:
    """nat (L3) -> fw (L2) -> fw2 (L2) -> gw (L3): the nat side resolves gw through both bridges, and
    gw resolves nat: each answered in place, per replica, by the first cross-connection."""

    def side(nf: str, mode: Mode, mac: str, address: str | None = None) -> XcSide:
        addresses = (ipaddress.ip_interface(address),) if address else ()
        return XcSide(nf, "eth1", "n", mode, mac, addresses)

    nat = side("nat", Mode.L3, "02:00:00:00:00:0a", "10.0.0.1/24")
    gw = side("gw", Mode.L3, "02:00:00:00:00:0b", "10.0.0.2/24")
    fw, fw2 = side("fw", Mode.L2, "02:00:00:00:00:0c"), side("fw2", Mode.L2, "02:00:00:00:00:0d")
    xcs = [
        CrossConnectionSpec("c-nat-fw", "c", "default", nat, fw),
        CrossConnectionSpec("c-fw-fw2", "c", "default", fw, fw2),
        CrossConnectionSpec("c-fw2-gw", "c", "default", fw2, gw),
    ]
    dp = MemoryDataplane()
    Reconciler(dp).reconcile(xcs, [])
    to_gw, to_nat = [Neighbour("10.0.0.2", gw.mac)], [Neighbour("10.0.0.1", nat.mac)]
    assert dp.neigh[("default/c-nat-fw", Side.B)] == to_gw
    assert dp.neigh[("default/c-fw-fw2", Side.B)] == to_gw
    assert dp.neigh[("default/c-fw-fw2", Side.A)] == to_nat
    assert dp.neigh[("default/c-fw2-gw", Side.A)] == to_nat
    assert dp.neigh[("default/c-fw2-gw", Side.B)] == to_gw
