"""Two tenants, one node: the real reconciler on the real eBPF data plane (private host namespace,
real veths and TC filters, pins under a unique directory; all removed even when a test fails).

Two teams deploy a chain whose CrossConnection has the same name in their own namespaces. Keyed by
the bare name, both wrote one data-plane entry: every pass moved the ports from one team's pods to
the other's (cross-tenant forwarding), and a second pass over the same picture was never a no-op.
Keyed by "namespace/name" each team has its own entry, its own Maglev table, and the picture is
stable. A port two sides contest stays where it is and is reported on every pass; the entry an older
agent registered under the bare name is renamed in place (same id, ports, filters and table).
"""

import ipaddress
from collections.abc import Iterator

import pytest

from flexsfc.agent.reconciler import Reconciler
from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.dataplane import codecs, libbpf, maps
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, Side, XcSide
from flexsfc.testing.netlab import Host, dataplane_at

pytestmark = pytest.mark.root

TEAMS = ("team-a", "team-b")


# `host` (the private host namespace) and `pin_dir` are the kernel tests' (tests/kernel/conftest.py).
@pytest.fixture
def dataplane(host: Host, pin_dir: str) -> Iterator[Dataplane]:
    with dataplane_at(pin_dir, session_capacity=4096, seed=7) as dp:
        yield dp


def chain_xc(namespace: str, name: str = "web-client-server", chain: str = "web") -> CrossConnectionSpec:
    address = ipaddress.ip_interface("10.50.0.2/24")
    return CrossConnectionSpec(
        name=name,
        chain=chain,
        namespace=namespace,
        side_a=XcSide("client", "eth1", "net-client", Mode.L2, "02:00:00:00:50:01"),
        side_b=XcSide("server", "eth1", "net-server", Mode.L3, "02:00:00:00:50:02", (address,)),
    )


def replica(host: Host, namespace: str, pod: str, nf: str) -> NfReplica:
    port = host.add_port()
    record = AttachmentRecord(
        container_id=f"c-{namespace}-{pod}",
        ifname="eth1",
        netns="",
        network=f"net-{nf}",
        host_ifname=port.host_ifname,
        host_ifindex=port.ifindex,
        mac="02:00:00:00:50:01",
        mode="L2",
    )
    return NfReplica(f"uid-{namespace}-{pod}", namespace, pod, nf, ReplicaPhase.RUNNING, (record,))


def ports_of(replicas: list[NfReplica], namespace: str, nf: str) -> set[int]:
    return {r.interfaces[0].host_ifindex for r in replicas if r.namespace == namespace and r.nf == nf}


def test_the_same_cross_connection_name_in_two_namespaces_never_shares_ports(
    host: Host, dataplane: Dataplane
) -> None:
    replicas = [
        replica(host, team, pod, nf)
        for team in TEAMS
        for pod, nf in (("client-0", "client"), ("server-0", "server"), ("server-1", "server"))
    ]
    xcs = [chain_xc(team) for team in TEAMS]
    # Different table sizes per team: chain settings are per namespace too.
    settings = {("team-a", "web"): ChainSettings(251), ("team-b", "web"): ChainSettings(1021)}
    reconciler = Reconciler(dataplane)

    first = reconciler.reconcile(xcs, replicas, chain_settings=settings)
    assert not first.errors
    second = reconciler.reconcile(list(reversed(xcs)), replicas, chain_settings=settings)
    assert not second.changed, f"a second pass over the same picture changed {second.summary()}"

    assert sorted(dataplane.list_xcs()) == ["team-a/web-client-server", "team-b/web-client-server"]
    for team, size in (("team-a", 251), ("team-b", 1021)):
        name = f"{team}/web-client-server"
        assert dataplane.xc_layout(name).table_size == size
        for side, nf in ((Side.A, "client"), (Side.B, "server")):
            held = {p.ifindex for p in dataplane.replicas(name, side)}
            assert held == ports_of(replicas, team, nf), f"{name} side {side.value} holds {held}"
            # The live Maglev table spreads over this team's replicas only.
            assert set(dataplane.maglev_table(name, side)) == ports_of(replicas, team, nf)
    for r in replicas:
        assert dataplane.attached(r.interfaces[0].host_ifindex)

    # A fresh agent on the same pins (a restart) agrees with the state: nothing to change.
    with Dataplane(dataplane.pin_dir) as restarted:
        again = Reconciler(restarted).reconcile(xcs, replicas, chain_settings=settings)
    assert not again.changed


def test_a_contested_port_is_reported_and_stays_put_over_passes(host: Host, dataplane: Dataplane) -> None:
    replicas = [replica(host, "team-a", "client-0", "client"), replica(host, "team-a", "server-0", "server")]
    web = chain_xc("team-a")
    reconciler = Reconciler(dataplane)
    reconciler.reconcile([web], replicas)
    server_port = replicas[1].interfaces[0].host_ifindex
    # A second chain of the same namespace whose side A is the same server interface.
    other = CrossConnectionSpec(
        name="audit-server-client",
        chain="audit",
        namespace="team-a",
        side_a=XcSide("server", "eth1", "net-server", Mode.L2, "02:00:00:00:50:03"),
        side_b=XcSide("client", "eth2", "net-x", Mode.L2, "02:00:00:00:50:04"),
    )
    states = []
    for xcs in ([web, other], [other, web], [web, other]):
        report = reconciler.reconcile(xcs, replicas)
        assert not report.failed
        assert len(report.conflicts) == 2 and all(f"port {server_port}" in c for c in report.conflicts)
        states.append(
            (
                [p.ifindex for p in dataplane.replicas("team-a/web-client-server", Side.B)],
                [p.ifindex for p in dataplane.replicas("team-a/audit-server-client", Side.A)],
                dataplane.maglev_table("team-a/web-client-server", Side.B),
            )
        )
    assert states[0] == states[1] == states[2]
    assert states[0][0] == [server_port] and states[0][1] == []
    assert dataplane.attached(server_port)


def test_an_entry_under_a_bare_name_from_an_older_agent_is_renamed_in_place(
    host: Host, dataplane: Dataplane
) -> None:
    replicas = [replica(host, "team-a", "client-0", "client"), replica(host, "team-a", "server-0", "server")]
    # What an agent from before namespaced names left pinned.
    xc_id = dataplane.ensure_xc("web-client-server", maglev_table_size=251)
    for side, r in ((Side.A, replicas[0]), (Side.B, replicas[1])):
        dataplane.set_replicas("web-client-server", side, [ReplicaPort(r.interfaces[0].host_ifindex, r.uid)])
    table = dataplane.maglev_table("web-client-server", Side.B)

    with Dataplane(dataplane.pin_dir) as restarted:
        report = Reconciler(restarted).reconcile([chain_xc("team-a")], replicas)
        assert report.xcs_renamed == ["web-client-server -> team-a/web-client-server"]
        assert not (
            report.xcs_created or report.xcs_deleted or report.ports_detached or report.ports_attached
        )
        assert restarted.list_xcs() == {"team-a/web-client-server": xc_id}
        assert restarted.maglev_table("team-a/web-client-server", Side.B) == table
        assert all(restarted.attached(r.interfaces[0].host_ifindex) for r in replicas)
    with Dataplane(dataplane.pin_dir) as reopened:  # what is pinned
        assert reopened.list_xcs() == {"team-a/web-client-server": xc_id}


def test_a_rename_interrupted_between_its_two_writes_resolves_to_the_new_name(dataplane: Dataplane) -> None:
    xc_id = dataplane.ensure_xc("web-client-server", maglev_table_size=251)
    layout = dataplane.xc_layout("web-client-server")
    record = maps.XcRecord(id=layout.id, table_size=layout.table_size, pool_base=layout.pool_base)
    # The new key written, the agent killed before deleting the old one.
    libbpf.map_update(
        dataplane.map_fd("xc_registry"), codecs.encode_name("team-a/web-client-server", "k"), record
    )

    with Dataplane(dataplane.pin_dir) as reopened:
        assert reopened.list_xcs() == {"team-a/web-client-server": xc_id}
        reopened.ensure_xc("team-a/other", maglev_table_size=251)  # the writer's next change drops it
        keys = {k.value.decode() for k in libbpf.map_keys(reopened.map_fd("xc_registry"), maps.Name)}
    assert keys == {"team-a/web-client-server", "team-a/other"}


def test_the_longest_names_fit_the_registry(dataplane: Dataplane) -> None:
    replicas: list[NfReplica] = []
    xcs = [chain_xc("n" * 63, name="x" * 253), chain_xc("n" * 63, name="x" * 252 + "y")]
    report = Reconciler(dataplane).reconcile(xcs, replicas)
    assert len(report.xcs_created) == 2 and len(set(dataplane.list_xcs())) == 2
    assert all(len(name.encode()) <= 255 for name in dataplane.list_xcs())
