"""Cross-connections across nodes (docs/multinode.md), with real packets: simulated nodes, each a network
namespace with its VXLAN device (external, gbp) and its own data plane, joined by a bridge (the
underlay); client and server replicas in pod namespaces on any node. What is simulated: the nodes
are namespaces of one machine, not machines; the kernel, VXLAN and the programs are the real ones.
"""

import contextlib
import os
import selectors
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dp_traffic import UDP_PORT, ReplicaServer, UdpFlows, configure, family_of, resolve
from pyroute2 import IPRoute

from flexsfc.dataplane import maps
from flexsfc.dataplane.api import DataplaneError, Neighbour, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.pins import destroy_pinned
from flexsfc.dataplane.tunnels import tunnel_vni
from flexsfc.model.constants import DEFAULT_TUNNEL_PORT
from flexsfc.model.types import Side
from flexsfc.testing.multinode import NodeLab, Replica, node_lab
from flexsfc.testing.netlab import Host, add_veth, private_netns, set_up
from flexsfc.util.netns import in_netns

pytestmark = pytest.mark.root

XC = "tenant/xc-mn"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:00:01", "02:5e:00:00:00:01"
V4 = ("10.9.0.1/24", "10.9.0.2/24")
V6 = ("fd00:9::1/64", "fd00:9::2/64")


@dataclass
class Chain:
    lab: NodeLab
    clients: dict[str, Replica]  # side A
    servers: dict[str, Replica]  # side B
    running: dict[str, ReplicaServer]
    stack: contextlib.ExitStack
    cidrs: tuple[str, str]

    @property
    def server_ip(self) -> str:
        return self.cidrs[1].split("/")[0]

    def add_client(self, name: str, node: str) -> Replica:
        replica = self.lab.pod(node, name, CLIENT_MAC, stack=self.stack)
        configure(replica.netns, "eth1", self.cidrs[0])
        self.clients[name] = replica
        return replica


@contextlib.contextmanager
def chain(
    nodes: int, servers: dict[str, str], clients: dict[str, str], cidrs: tuple[str, str] = V4
) -> Iterator[Chain]:
    """`clients` (side A) and `servers` (side B), name -> node; every node programmed with all of them."""
    with contextlib.ExitStack() as stack:
        lab = node_lab(nodes, stack=stack, seed=4242)
        c = Chain(lab, {}, {}, {}, stack, cidrs)
        for name, node in clients.items():
            c.add_client(name, node)
        for name, node in servers.items():
            replica = c.servers[name] = lab.pod(node, name, SERVER_MAC, stack=stack)
            configure(replica.netns, "eth1", cidrs[1])
        lab.program(XC, Side.A, list(c.clients.values()))
        lab.program(XC, Side.B, list(c.servers.values()))
        lab.neighbours(XC, Side.A, [Neighbour(cidrs[0].split("/")[0], CLIENT_MAC)])
        lab.neighbours(XC, Side.B, [Neighbour(c.server_ip, SERVER_MAC)])
        for name, replica in c.servers.items():
            c.running[name] = ReplicaServer(replica.netns, name, family_of(c.server_ip))
            stack.callback(c.running[name].stop)
        yield c


@contextlib.contextmanager
def udp_flows(netns: str, server_ip: str, count: int, prefix: str) -> Iterator[tuple[UdpFlows, list[bytes]]]:
    resolve(netns, server_ip)
    flows = UdpFlows(netns, server_ip)
    try:
        yield flows, flows.open(count, prefix)
    finally:
        flows.close()


@pytest.mark.parametrize("cidrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_flows_spread_over_replicas_on_every_node_and_stay(cidrs: tuple[str, str]) -> None:
    servers = {"s1": "node1", "s2": "node2", "s3": "node3"}
    with (
        chain(3, servers, {"c": "node1"}, cidrs) as c,
        udp_flows(c.clients["c"].netns, c.server_ip, 90, "f") as (
            flows,
            ids,
        ),
    ):
        for _ in range(5):
            assert flows.round(ids) == 0
        # replica_of: exactly one replica answered each flow, in every round
        per_replica = {name: sum(1 for f in ids if flows.replica_of(f) == name) for name in servers}
        assert all(count >= 10 for count in per_replica.values()), per_replica
        assert c.lab.drops() == {"node1": {}, "node2": {}, "node3": {}}
        assert c.lab.events("node1")["tunnel_sent"] >= 5 * (per_replica["s2"] + per_replica["s3"])
        assert c.lab.events("node2")["tunnel_received"] >= 5 * per_replica["s2"]


def test_replies_reach_the_exact_sender_after_the_senders_table_changes() -> None:
    """The client replica on node2 sends; the server sits on node1. node1 records each flow's sender
    from the tunnel metadata and answers to it, also once side A's table holds more replicas on
    every node (the symmetric hash alone would send most answers to another client replica)."""
    with chain(3, {"s1": "node1"}, {"c2": "node2", "c1": "node1"}) as c:
        with udp_flows(c.clients["c2"].netns, c.server_ip, 60, "g") as (flows, ids):
            assert flows.round(ids) == 0
            for i in range(6):
                c.add_client(f"x{i}", f"node{i % 3 + 1}")
            c.lab.program(XC, Side.A, list(c.clients.values()))
            for _ in range(3):
                assert flows.round(ids) == 0
        udp = [s for s in c.lab.nodes["node1"].dp.sessions(XC) if s.port_hi == UDP_PORT]  # not resolve()'s
        assert len(udp) == 60 and all(s.confirmed for s in udp)
        assert len({s.ifindex_a for s in udp}) == 1  # all c2's remote port on node1


@pytest.mark.parametrize("cidrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_fragments_of_a_datagram_reach_one_replica_across_nodes(cidrs: tuple[str, str]) -> None:
    """4000 B datagrams (three fragments at MTU 1450) to replicas on three nodes: a datagram whose
    fragments were split over replicas is never reassembled, so every answer proves they were not.
    The answers (2 KB) are fragmented on the way back too."""
    servers = {"s1": "node1", "s2": "node2", "s3": "node3"}
    with (
        chain(3, servers, {"c": "node1"}, cidrs) as c,
        udp_flows(c.clients["c"].netns, c.server_ip, 30, "h") as (
            flows,
            ids,
        ),
    ):
        for round_no in range(3):
            answered = big_round(flows, ids, round_no)
            assert answered == len(ids), f"round {round_no}: {len(ids) - answered} datagrams lost"
        assert {flows.replica_of(f) for f in ids} == set(servers)
        assert all(not drops for drops in c.lab.drops().values()), c.lab.drops()


def big_round(flows: UdpFlows, ids: list[bytes], round_no: int) -> int:
    sel = selectors.DefaultSelector()
    for flow in ids:
        sel.register(flows.sockets[flow], selectors.EVENT_READ, flow)
    for flow in ids:
        flows.sockets[flow].sendto(flow + b" %d " % round_no + b"x" * 4000, (flows.server_ip, UDP_PORT))
    pending, deadline = set(ids), time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            with contextlib.suppress(BlockingIOError):
                while True:
                    replica, flow = key.fileobj.recv(8192).split(b" ")[:2]
                    flows.replicas[flow].add(replica.decode())
                    pending.discard(flow)
    sel.close()
    return len(ids) - len(pending)


def test_node_loss_moves_only_the_flows_of_the_lost_node() -> None:
    servers = {"s1": "node1", "s2": "node2", "s3": "node3"}
    with (
        chain(3, servers, {"c": "node1"}) as c,
        udp_flows(c.clients["c"].netns, c.server_ip, 90, "k") as (
            flows,
            ids,
        ),
    ):
        assert flows.round(ids) == 0
        before = {f: flows.replica_of(f) for f in ids}
        # node3 is gone: its replica leaves every table, its address every node list.
        c.running["s3"].stop()
        survivors = ("node1", "node2")
        c.lab.program(XC, Side.B, [c.servers["s1"], c.servers["s2"]], only=survivors)
        for name in survivors:
            c.lab.nodes[name]("set_nodes", {n: c.lab.nodes[n].address for n in survivors})
        for _ in range(3):
            assert flows.round(ids) == 0
        kept = [f for f in ids if before[f] != "s3"]
        moved = [f for f in ids if before[f] == "s3"]
        assert moved and kept
        assert all(flows.replicas[f] == {before[f]} for f in kept)  # not one answer from another replica
        assert all(len(flows.replicas[f] - {"s3"}) == 1 for f in moved)  # re-hashed once, then stayed


def vxlan_frame(vni: int, inner: bytes, gbp: int | None = None) -> bytes:
    flags = 0x08000000 | (0x80000000 if gbp is not None else 0)  # I (VNI valid), G (group policy)
    return struct.pack("!II", flags | (gbp or 0), vni << 8) + inner


def udp_frame(src_ip: str, dst_ip: str, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP to the server replicas (UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", 40000, UDP_PORT, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src_ip), socket.inet_aton(dst_ip),
    )  # fmt: skip
    words = sum(struct.unpack("!10H", header))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    header = header[:10] + struct.pack("!H", ~words & 0xFFFF) + header[12:]
    eth = (
        bytes.fromhex(SERVER_MAC.replace(":", "")) + bytes.fromhex(CLIENT_MAC.replace(":", "")) + b"\x08\x00"
    )
    return eth + header + udp


def send_udp(netns: str, dst: str, payload: bytes) -> None:
    with in_netns(netns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (dst, DEFAULT_TUNNEL_PORT))


def test_spoofed_tunnel_packets_cannot_reach_replicas() -> None:
    """What the tunnel ingress takes: packets from known nodes whose VNI names a local port. A host on
    the underlay with another address, or a known node naming no port, gets nothing delivered and
    every packet is counted by reason. (A sender that can use a known node's address and guess a
    port's VNI can deliver: the underlay must be protected, docs/multinode.md.)"""
    with chain(2, {"s2": "node2"}, {"c": "node1"}) as c:
        node2 = c.lab.nodes["node2"]
        rogue = c.stack.enter_context(private_netns("rogue", prefix="fxmn"))
        with in_netns(c.lab.fabric):
            port = add_veth("rogue", "ul", peer_netns=rogue)
            set_up(port)
            with IPRoute() as ipr:
                ipr.link("set", index=port, master=ipr.link_lookup(ifname="fab")[0])
        with in_netns(rogue), IPRoute() as ipr:
            ul = ipr.link_lookup(ifname="ul")[0]
            ipr.addr("add", index=ul, address="10.250.0.99", prefixlen=24)
            ipr.link("set", index=ul, state="up")
        target_vni = tunnel_vni(XC, 1, "s2")
        inner = udp_frame("10.9.0.1", c.server_ip, b"spoofed 0")
        received_before = sum(c.running["s2"].received.values())

        for _ in range(5):
            send_udp(rogue, node2.address, vxlan_frame(target_vni, inner, gbp=1))  # unknown node
            send_udp(
                c.lab.nodes["node1"].netns, node2.address, vxlan_frame(target_vni ^ 0x5A5A5A, inner, gbp=1)
            )
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            drops = node2.dp.drop_stats()
            if drops["tunnel_unknown_node"] >= 5 and drops["tunnel_unknown_target"] >= 5:
                break
            time.sleep(0.05)
        drops = node2.dp.drop_stats()
        assert drops["tunnel_unknown_node"] == 5 and drops["tunnel_unknown_target"] == 5, drops
        assert sum(c.running["s2"].received.values()) == received_before


def test_a_target_leaving_on_its_node_is_replaced_there_before_the_sender_hears() -> None:
    """node2 marks s2 leaving (its pod's CNI DEL) while node1 still lists it: node1 keeps sending s2's
    flows to node2, which re-hashes them to another replica instead of delivering into the pod being
    deleted. Not one datagram is lost; only s2's flows move."""
    servers = {"s1": "node1", "s2": "node2", "s3": "node2"}
    with (
        chain(2, servers, {"c": "node1"}) as c,
        udp_flows(c.clients["c"].netns, c.server_ip, 90, "m") as (
            flows,
            ids,
        ),
    ):
        assert flows.round(ids) == 0
        before = {f: flows.replica_of(f) for f in ids}
        c.servers["s2"].state = ReplicaState.LEAVING
        c.lab.program(XC, Side.B, list(c.servers.values()), only=("node2",))
        for _ in range(3):
            assert flows.round(ids) == 0
        moved = [f for f in ids if before[f] == "s2"]
        assert moved
        assert all(flows.replicas[f] == {before[f]} for f in ids if before[f] != "s2")
        assert all(flows.replicas[f] - {"s2"} for f in moved)


def test_a_data_plane_pinned_before_multi_node_upgrades_to_it(host: Host, pin_dir: str) -> None:
    """A pin set of the version before the tunnel (its maps and the xtunnel program missing): the
    agent's upgrade creates them, moves the ports' filters and keeps every other map; nothing is left
    for the first pass to repair."""
    tunnel_pins = [n for n in maps.MAP_NAMES if n.startswith("tunnel_")]
    dp = Dataplane(pin_dir, session_capacity=65536)
    try:
        a, b = host.add_port().ifindex, host.add_port().ifindex
        dp.ensure_xc(XC)
        dp.set_replicas(XC, Side.A, [ReplicaPort(a, "a")])
        dp.set_replicas(XC, Side.B, [ReplicaPort(b, "b")])
        dp.close()
        for name in [*tunnel_pins, maps.TUNNEL_PROGRAM_NAME]:
            os.unlink(os.path.join(pin_dir, name))
        with pytest.raises(DataplaneError, match="incomplete pinned state"):
            Dataplane(pin_dir)
        dp = Dataplane(pin_dir, upgrade=True)
        report = dp.upgrade_report
        assert report is not None and report.upgraded
        assert sorted(report.created) == sorted(tunnel_pins)
        assert {"sessions", "ports", "maglev_pool"} <= set(report.kept)
        assert sorted(report.ports) == sorted([a, b])
        assert os.path.exists(os.path.join(pin_dir, maps.TUNNEL_PROGRAM_NAME))
        assert dp.converge() == []
        assert [p.ifindex for p in dp.replicas(XC, Side.B)] == [b]
    finally:
        dp.close()
        destroy_pinned(pin_dir)


def test_a_remote_replica_added_back_under_traffic_never_sends_into_a_missing_tunnel_entry() -> None:
    """A remote replica removed and added back takes the same key and usually the same slot, while
    sessions still name it: its tunnel entry is written before the slot names it again, so not one
    packet is dropped for a missing one (`tunnel_send`; before: a few per add at 10 kpps)."""
    with chain(2, {"s2": "node2"}, {"c": "node1"}) as c:
        resolve(c.clients["c"].netns, c.server_ip)
        # Another process: in this one the sender would wait for the GIL while set_replicas runs,
        # exactly when the window to test for is open.
        blast = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "while True:\n"
            "    for port in range(40000, 40016):\n"
            f"        s.sendto(b'x', ('{c.server_ip}', port))\n"
        )
        sender = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{c.clients['c'].netns}", sys.executable, "-c", blast]
        )
        try:
            time.sleep(0.3)
            node1 = c.lab.nodes["node1"]
            for _ in range(30):
                c.lab.program(XC, Side.B, [], only=("node1",))
                time.sleep(0.01)
                c.lab.program(XC, Side.B, [c.servers["s2"]], only=("node1",))
                time.sleep(0.02)
        finally:
            sender.kill()
            sender.wait()
        assert node1.dp.drop_stats()["tunnel_send"] == 0
        assert node1.dp.event_stats()["tunnel_sent"] > 100
