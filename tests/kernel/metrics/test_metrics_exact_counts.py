"""Exported counters equal the traffic actually sent through the real data plane.

Topology (all real: netns, veth, the eBPF program through flexsfc.dataplane.facade.Dataplane with its
own pin directory): a client netns on side A of one cross-connection, two echo replicas (sharing IP
and MAC, as NF replicas do) on side B. The client sends an exact UDP burst from many source ports;
each replica counts what its socket received and echoes it back. Every exported per-replica counter
must match the sockets' counts exactly, with either redirect mode (into the peer, or to the veth).
"""

import select
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import IPRoute, NetNS

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.dataplane.api import RedirectMode, ReplicaPort
from flexsfc.dataplane.sessions import TICK_NS, session_clock
from flexsfc.metrics.exporter import Exporter
from flexsfc.metrics.labels import PortIndex
from flexsfc.model.mac import derive_mac
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Mode, SessionTimeouts, Side, XcSide
from flexsfc.util.netns import in_netns

pytestmark = pytest.mark.root

CLIENT_IP, SERVICE_IP, PORT = "10.77.0.1", "10.77.0.2", 7000
FLOWS, PACKETS_PER_FLOW, PAYLOAD = 32, 16, 100
FRAME = 14 + 20 + 8 + PAYLOAD  # what the data plane counts: the Ethernet frame at TC ingress
SO_RCVBUFFORCE = 33


@dataclass
class Pod:
    name: str
    netns: str
    host_ifname: str
    host_ifindex: int = 0
    mac: str = ""
    sockets: list[socket.socket] = field(default_factory=list)


def sysctl_in(netns: str, *settings: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *settings], check=True)


def add_pod(ipr: IPRoute, netns: str, name: str, host_ifname: str, ip: str, mac: str | None) -> Pod:
    # No IPv6 in the pod: router solicitations and MLD reports would add packets to the counters.
    sysctl_in(netns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    peer = {"ifname": "eth0", "net_ns_fd": netns, **({"address": mac} if mac else {})}
    ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
    (index,) = ipr.link_lookup(ifname=host_ifname)
    ipr.link("set", index=index, state="up")
    with NetNS(netns) as ns:
        (eth0,) = ns.link_lookup(ifname="eth0")
        ns.addr("add", index=eth0, address=ip, prefixlen=24)
        ns.link("set", index=eth0, state="up")
        mac = ns.get_links(eth0)[0].get_attr("IFLA_ADDRESS")
    return Pod(name, netns, host_ifname, index, mac)


def static_neighbour(netns: str, ip: str, mac: str) -> None:
    subprocess.run(
        ["ip", "-n", netns, "neigh", "replace", ip, "lladdr", mac, "dev", "eth0", "nud", "permanent"],
        check=True,
    )


def udp_socket(netns: str, port: int) -> socket.socket:
    with in_netns(netns):  # a socket stays in the netns it was created in
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind(("0.0.0.0", port))
    return sock


def receive(socks: list[socket.socket], expected: int) -> list[list[tuple[bytes, tuple[str, int]]]]:
    """Read until `expected` datagrams arrived on `socks` altogether (or 3 s of silence)."""
    got: list[list[tuple[bytes, tuple[str, int]]]] = [[] for _ in socks]
    while sum(map(len, got)) < expected:
        ready, _, _ = select.select(socks, [], [], 3.0)
        if not ready:
            break
        for sock in ready:
            got[socks.index(sock)].append(sock.recvfrom(2048))
    return got


@pytest.fixture(params=[RedirectMode.PEER, RedirectMode.REDIRECT])
def topology(request, netns_factory) -> Iterator[tuple[object, list[Pod], CrossConnectionSpec, PortIndex]]:  # type: ignore[no-untyped-def]
    from flexsfc.dataplane.facade import Dataplane

    suffix = uuid.uuid4().hex[:6]
    pin_dir = f"/sys/fs/bpf/flexsfc-test-metrics-{suffix}"
    try:
        dp = Dataplane(pin_dir, redirect_mode=request.param)
    except BaseException:
        shutil.rmtree(pin_dir, ignore_errors=True)  # a failed load may leave the directory
        raise
    shared_mac = derive_mac("metrics-test", "eth0")
    xc = CrossConnectionSpec(
        name=f"metrics-{suffix}",
        chain="metrics",
        namespace="test",
        side_a=XcSide("client", "eth0", "net-client", Mode.L3, "02:00:00:00:00:01"),
        side_b=XcSide("echo", "eth0", "net-echo", Mode.L3, shared_mac),
    )
    ipr = IPRoute()
    pods: list[Pod] = []
    try:
        client = add_pod(ipr, netns_factory("mxc"), "client-0", f"fxmc{suffix}", CLIENT_IP, None)
        echoes = [
            add_pod(ipr, netns_factory(f"mxe{i}"), f"echo-{i}", f"fxme{i}{suffix}", SERVICE_IP, shared_mac)
            for i in range(2)
        ]
        pods += [client, *echoes]
        static_neighbour(client.netns, SERVICE_IP, shared_mac)
        for echo in echoes:
            static_neighbour(echo.netns, CLIENT_IP, client.mac)

        dp.ensure_xc(xc.name)
        dp.set_replicas(xc.name, Side.A, [ReplicaPort(client.host_ifindex, "uid-client-0")])
        dp.set_replicas(xc.name, Side.B, [ReplicaPort(e.host_ifindex, f"uid-{e.name}") for e in echoes])

        def replica(pod: Pod, nf: str) -> NfReplica:
            record = AttachmentRecord(
                "cid", "eth0", pod.netns, "net", pod.host_ifname, pod.host_ifindex, pod.mac, "L3"
            )
            return NfReplica(f"uid-{pod.name}", "test", pod.name, nf, ReplicaPhase.RUNNING, (record,))

        index = PortIndex()
        index.update([xc], [replica(client, "client"), *(replica(e, "echo") for e in echoes)])
        yield dp, [client, *echoes], xc, index
    finally:
        for pod in pods:
            for sock in pod.sockets:
                sock.close()
        try:
            dp.destroy()
        finally:
            ipr.close()  # the host veth ends go with the namespaces (netns_factory)


def scrape(exporter: Exporter) -> dict[tuple[str, str, str], float]:
    """(metric sample name, pod, extra) -> value, for the samples this test checks."""
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(generate_latest(exporter.registry).decode()):
        for s in family.samples:
            labels = s.labels
            key = labels.get("pod") or labels.get("reason") or labels.get("family") or labels.get("state", "")
            out[(s.name, key, s.labels.get("side", ""))] = s.value
    return out


def test_exported_counters_match_udp_burst(topology) -> None:  # type: ignore[no-untyped-def]
    dp, (client, *echoes), _xc, index = topology
    exporter = Exporter.create(dp, index)
    before = scrape(exporter)

    servers = {e.name: udp_socket(e.netns, PORT) for e in echoes}
    for e in echoes:
        e.sockets.append(servers[e.name])
    senders = [udp_socket(client.netns, 0) for _ in range(FLOWS)]
    client.sockets.extend(senders)
    payload = b"x" * PAYLOAD
    for _ in range(PACKETS_PER_FLOW):
        for sock in senders:
            sock.sendto(payload, (SERVICE_IP, PORT))

    sent = FLOWS * PACKETS_PER_FLOW
    received = dict(zip(servers, receive(list(servers.values()), sent), strict=True))
    for name, packets in received.items():
        for data, addr in packets:
            servers[name].sendto(data, addr)  # echo: the replica emits exactly what it received
    replies = sum(map(len, receive(senders, sent)))
    time.sleep(0.2)  # nothing more may arrive: a late extra packet would show in the counters
    assert not select.select([*senders, *servers.values()], [], [], 0)[0]
    got = {name: len(packets) for name, packets in received.items()}
    assert sum(got.values()) == sent, "the burst must arrive whole for an exact comparison"
    assert replies == sent
    assert all(got.values()), f"both replicas should take flows with {FLOWS} source ports: {got}"
    flows_per_replica = {name: len({addr for _, addr in packets}) for name, packets in received.items()}

    after = scrape(exporter)

    def delta(metric: str, pod: str, side: str = "") -> float:
        key = (metric, pod, side)
        return after.get(key, 0.0) - before.get(key, 0.0)

    for name in got:
        assert delta("flexsfc_nf_rx_packets_total", name, "B") == got[name]
        assert delta("flexsfc_nf_rx_bytes_total", name, "B") == got[name] * FRAME
        assert delta("flexsfc_nf_tx_packets_total", name, "B") == got[name]
        assert delta("flexsfc_nf_tx_bytes_total", name, "B") == got[name] * FRAME
        assert delta("flexsfc_nf_sessions_created_total", name, "B") == flows_per_replica[name]
    assert delta("flexsfc_nf_tx_packets_total", "client-0", "A") == sent
    assert delta("flexsfc_nf_rx_packets_total", "client-0", "A") == sent
    assert delta("flexsfc_nf_rx_bytes_total", "client-0", "A") == sent * FRAME
    assert after[("flexsfc_xc_active_sessions", "", "")] == FLOWS
    assert after[("flexsfc_xc_replicas", "active", "B")] == 2
    assert after[("flexsfc_xc_replicas", "draining", "B")] == 0
    assert after[("flexsfc_exporter_unlabelled_ports", "", "")] == 0
    assert sum(v for (name, _, _), v in after.items() if name == "flexsfc_dataplane_drops_total") == sum(
        v for (name, _, _), v in before.items() if name == "flexsfc_dataplane_drops_total"
    )
    assert after[("flexsfc_dataplane_session_capacity", "ipv4", "")] == dp.session_capacity
    assert after[("flexsfc_dataplane_session_capacity", "ipv6", "")] == dp.session_capacity_v6
    assert delta("flexsfc_dataplane_sessions_expired_total", "") == 0

    # The sweep, an hour of session clock later: every session expires, and the counter says so.
    later = (session_clock() + 3600 * 1_000_000_000 // TICK_NS) & 0xFFFFFFFF
    assert dp.sweep_sessions_by_id({}, SessionTimeouts(), now=later).total_expired == FLOWS
    swept = scrape(exporter)
    assert (
        swept[("flexsfc_dataplane_sessions_expired_total", "", "")]
        - after.get(("flexsfc_dataplane_sessions_expired_total", "", ""), 0.0)
        == FLOWS
    )
    assert swept[("flexsfc_xc_active_sessions", "", "")] == 0


@pytest.mark.parametrize("topology", [RedirectMode.PEER], indirect=True)
def test_served_over_http(topology) -> None:  # type: ignore[no-untyped-def]
    dp, _, _, index = topology
    exporter = Exporter.create(dp, index)
    server = exporter.serve(0, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    names = Counter(
        line.split("{")[0].split(" ")[0] for line in body.splitlines() if not line.startswith("#")
    )
    assert names["flexsfc_nf_rx_packets_total"] == 3  # client + two echo replicas
    assert names["flexsfc_dataplane_up"] == 1
