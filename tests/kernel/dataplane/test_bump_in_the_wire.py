"""A replica with ports on two cross-connections leaves while packets are inside the chain:
client -> xc "up" -> three transparent bridges (the paper's L2 firewall, each replica a netns
bridging eth1 and eth2) -> xc "down" -> UDP echo server. Real packets; which bridge carries a flow
is read from the session table.

To make "in flight" deterministic, the server holds every request of a round until the change is
made, then answers: the replies travel back while the replica is leaving. Marking the ports leaving
first loses none, on whichever side the agent gets to first and also when the CNI plugin marks them
before the agent knows. Taking one side's port away while the other side still sends into the
replica (what the data plane did before leaving existed, one cross-connection after the other) loses
exactly the held replies of that replica's flows: the test sees such a loss.
"""

import contextlib
import selectors
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from dp_traffic import UDP_PORT, configure, resolve

from flexsfc.dataplane.api import Neighbour, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.ports.leaving import retire_ports
from flexsfc.model.types import Side
from flexsfc.util.netns import in_netns

pytestmark = pytest.mark.root

CLIENT_IP, SERVER_IP = "10.9.0.1", "10.9.0.2"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:00:01", "02:5e:00:00:00:01"
UP, DOWN = "up", "down"
FLOWS = 150
TIMEOUT_SECONDS = 3.0


@dataclass
class Bump:
    netns: str
    eth1: int  # host ifindex of the port on xc "up" (side B)
    eth2: int  # host ifindex of the port on xc "down" (side A)


@dataclass
class WireChain:
    dp: Dataplane
    host: object
    bumps: dict[str, Bump]
    client: list[socket.socket] = field(default_factory=list)  # one UDP flow each
    server: socket.socket | None = None

    def set_side(self, xc: str, states: dict[str, ReplicaState | None]) -> None:
        """One xc's side of bumps: ACTIVE unless `states` says otherwise; None leaves it out."""
        side, port = (Side.B, "eth1") if xc == UP else (Side.A, "eth2")
        replicas = [
            ReplicaPort(getattr(bump, port), name, states.get(name) or ReplicaState.ACTIVE)
            for name, bump in self.bumps.items()
            if states.get(name, ReplicaState.ACTIVE) is not None
        ]
        self.dp.set_replicas(xc, side, replicas)

    def owners(self) -> dict[int, str]:
        """Client port of every flow -> the bump whose eth1 its session on xc "up" names."""
        by_port = {bump.eth1: name for name, bump in self.bumps.items()}
        sessions = self.dp.sessions(UP)
        return {
            (s.port_lo if s.port_hi == UDP_PORT else s.port_hi): by_port.get(s.ifindex_b, "?")
            for s in sessions
            if s.proto == socket.IPPROTO_UDP and UDP_PORT in (s.port_lo, s.port_hi)
        }

    def exchange(self, change: Callable[[], None] = lambda: None) -> int:
        """One request per flow; the server holds them all, `change()` runs, then the server answers.
        Returns how many replies never came back."""
        assert self.server is not None
        for i, sock in enumerate(self.client):
            sock.send(b"%d" % i)
        held = []
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while len(held) < len(self.client) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                held.append(self.server.recvfrom(64))
        assert len(held) == len(self.client), "requests lost on the way in"
        change()
        for data, peer in held:
            self.server.sendto(data, peer)
        pending = set(range(len(self.client)))
        with selectors.DefaultSelector() as selector:
            for i, sock in enumerate(self.client):
                selector.register(sock, selectors.EVENT_READ, i)
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while pending and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=0.1):
                    key.fileobj.recv(64)
                    pending.discard(key.data)
        return len(pending)


def _bridge(netns: str) -> None:
    script = (
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && "
        "ip link add br0 type bridge && ip link set eth1 master br0 && ip link set eth2 master br0 && "
        "ip link set eth1 up && ip link set eth2 up && ip link set br0 up"
    )
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", script], check=True)


@pytest.fixture
def wire(host, dataplane: Dataplane, netns_factory):
    client_ns, server_ns = netns_factory("client"), netns_factory("server")
    client = host.add_port(client_ns, mac=CLIENT_MAC)
    server = host.add_port(server_ns, mac=SERVER_MAC)
    configure(client_ns, "eth1", f"{CLIENT_IP}/24")
    configure(server_ns, "eth1", f"{SERVER_IP}/24")
    bumps = {}
    for i in range(3):
        ns = netns_factory(f"bump{i}")
        eth1 = host.add_port(ns, pod_ifname="eth1")
        eth2 = host.add_port(ns, pod_ifname="eth2")
        _bridge(ns)
        bumps[f"b{i}"] = Bump(ns, eth1.ifindex, eth2.ifindex)
    for xc in (UP, DOWN):
        dataplane.ensure_xc(xc, maglev_table_size=1021)
    dataplane.set_replicas(UP, Side.A, [ReplicaPort(client.ifindex, "client")])
    dataplane.set_replicas(DOWN, Side.B, [ReplicaPort(server.ifindex, "server")])
    # L2 in the middle: each end's ARP is answered by the xc next to it, for the other end.
    dataplane.set_neighbours(UP, Side.B, [Neighbour(SERVER_IP, SERVER_MAC)])
    dataplane.set_neighbours(DOWN, Side.A, [Neighbour(CLIENT_IP, CLIENT_MAC)])
    chain = WireChain(dataplane, host, bumps)
    for xc in (UP, DOWN):
        chain.set_side(xc, {})
    try:
        with in_netns(server_ns):
            chain.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            chain.server.bind((SERVER_IP, UDP_PORT))
            chain.server.settimeout(0.1)
        with in_netns(client_ns):
            for _ in range(FLOWS):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.connect((SERVER_IP, UDP_PORT))
                sock.setblocking(False)
                chain.client.append(sock)
        resolve(client_ns, SERVER_IP)
        resolve(server_ns, CLIENT_IP)
        assert chain.exchange() == 0
        yield chain
    finally:
        for sock in [*chain.client, *([chain.server] if chain.server else [])]:
            sock.close()


def _on(wire: WireChain, bump: str) -> dict[int, str]:
    owners = wire.owners()
    assert len(owners) == FLOWS and set(owners.values()) == set(wire.bumps), owners
    assert any(owner == bump for owner in owners.values())
    return owners


def _moved_off(wire: WireChain, before: dict[int, str], gone: str) -> None:
    after = wire.owners()
    for flow, owner in before.items():
        assert after[flow] != gone if owner == gone else after[flow] == owner, flow


def _delete_veths(wire: WireChain, bump: Bump) -> None:
    for port in [p for p in wire.host.ports if p.ifindex in (bump.eth1, bump.eth2)]:
        wire.host.remove_port(port)


@pytest.mark.parametrize("first", [UP, DOWN])
def test_a_leaving_bump_loses_no_reply_in_flight_whichever_side_goes_first(
    wire: WireChain, first: str
) -> None:
    before = _on(wire, "b1")
    second = DOWN if first == UP else UP
    # What the agent does for a gone pod, one xc after the other; replies in flight at each step.
    assert wire.exchange(lambda: wire.set_side(first, {"b1": ReplicaState.LEAVING})) == 0
    assert wire.exchange(lambda: wire.set_side(second, {"b1": ReplicaState.LEAVING})) == 0

    def remove() -> None:  # then the veths go, then the ports
        _delete_veths(wire, wire.bumps["b1"])
        wire.set_side(first, {"b1": None})
        wire.set_side(second, {"b1": None})

    assert wire.exchange(remove) == 0
    assert wire.exchange() == 0
    _moved_off(wire, before, "b1")


def test_ports_marked_leaving_by_the_cni_plugin_lose_nothing_before_the_agent_knows(wire: WireChain) -> None:
    before = _on(wire, "b2")
    bump = wire.bumps["b2"]

    def kubelet_teardown() -> None:  # CNI DEL of both networks; the agent has heard nothing yet
        assert retire_ports(wire.dp.pin_dir, [bump.eth1, bump.eth2]) == sorted([bump.eth1, bump.eth2])
        _delete_veths(wire, bump)

    assert wire.exchange(kubelet_teardown) == 0
    assert wire.exchange() == 0
    assert wire.exchange(lambda: [wire.set_side(xc, {"b2": None}) for xc in (UP, DOWN)]) == 0
    _moved_off(wire, before, "b2")


def test_taking_one_side_away_while_the_other_still_sends_in_loses_the_replies(wire: WireChain) -> None:
    """The contrast case: without leaving, removal one xc after the other."""
    before = _on(wire, "b0")
    on_b0 = sum(owner == "b0" for owner in before.values())
    assert wire.exchange(lambda: wire.set_side(UP, {"b0": None})) == on_b0
    wire.set_side(DOWN, {"b0": None})
    assert wire.exchange() == 0
