"""Two replicas of one side sending the same 5-tuple: a collision, counted, and the session stays.

Replicas of a NAT NF share one IP; two of them can translate different inner flows to the same
outer 5-tuple (same source port towards the same server). The cross-connection sees one flow coming
from two replicas. It used to follow whichever sent last, so the replies of both conversations went
back and forth between the two replicas. Now, while the replica recorded in the session is live, a
packet from another replica of that side is forwarded, counted as `session_collision`, and changes
nothing: the replies keep going to the first replica. A flow whose recorded replica left or was
removed (re-hashed upstream) is still followed (test_program.py).
"""

import pytest
from prometheus_client.core import Metric

from flexsfc.dataplane.api import ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.metrics.exporter import DataplaneCollector
from flexsfc.metrics.labels import PortIndex
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

XC = "xc-nat"
NAT_IP, SERVER = "10.5.0.1", "10.3.0.1"  # every NAT replica's outside address


@pytest.fixture
def ports(host, dataplane) -> tuple[list[int], list[int]]:
    a = [host.add_port().ifindex for _ in range(3)]  # NAT replicas
    b = [host.add_port().ifindex for _ in range(3)]  # servers
    dataplane.ensure_xc(XC, maglev_table_size=1021)
    dataplane.set_replicas(XC, Side.A, [ReplicaPort(i, f"a-{i}") for i in a])
    dataplane.set_replicas(XC, Side.B, [ReplicaPort(i, f"b-{i}") for i in b])
    return a, b


def outer(i: int, proto: int = frames.UDP) -> tuple[bytes, bytes]:
    """The outer (translated) flow i: NAT address -> server, and the server's reply."""
    forward = frames.flow_frame(NAT_IP, SERVER, proto, 40000 + i, 443)
    return forward, frames.flow_frame(SERVER, NAT_IP, proto, 443, 40000 + i)


def target(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    verdict = progtest.run(dp, frame, ifindex)
    assert verdict.redirected and verdict.target is not None, verdict
    return verdict.target


def collisions(dp: Dataplane) -> int:
    return dp.event_stats()["session_collision"]


@pytest.mark.parametrize("proto", [frames.UDP, frames.TCP, frames.SCTP], ids=["udp", "tcp", "sctp"])
def test_a_second_live_sender_is_a_collision_and_the_session_stays(
    dataplane, ports, one_cpu, proto: int
) -> None:
    a, _ = ports
    for i in range(20):
        forward, reply = outer(i, proto)
        first, second = a[i % 3], a[(i + 1) % 3]
        server = target(dataplane, forward, first)
        target(dataplane, forward, first)  # the session is now in the flow cache too
        before = collisions(dataplane)
        for _ in range(5):
            assert target(dataplane, forward, second) == server  # forwarded, not dropped
            # Replies, from the cache or the table, go to the first replica, never to the second
            # (the cached entry was not rewritten with the second sender either).
            for _ in range(3):
                assert target(dataplane, reply, server) == first
            assert target(dataplane, forward, first) == server
        assert collisions(dataplane) - before == 5  # one per packet of the second sender
        [entry] = [e for e in dataplane.sessions(XC) if 40000 + i in (e.port_lo, e.port_hi)]
        assert entry.ifindex_a == first
    assert dataplane.session_count(XC) == 20


def test_a_draining_replica_still_holds_its_sessions(dataplane, ports) -> None:
    a, _ = ports
    forward, reply = outer(1)
    server = target(dataplane, forward, a[0])
    draining = ReplicaPort(a[0], f"a-{a[0]}", ReplicaState.DRAINING)
    dataplane.set_replicas(XC, Side.A, [draining, *(ReplicaPort(i, f"a-{i}") for i in a[1:])])
    assert target(dataplane, forward, a[1]) == server
    assert collisions(dataplane) == 1
    assert target(dataplane, reply, server) == a[0]


@pytest.mark.parametrize("how", ["leaving", "removed"])
def test_a_flow_whose_replica_is_gone_is_followed_without_a_collision(dataplane, ports, how: str) -> None:
    a, _ = ports
    forward, reply = outer(2)
    server = target(dataplane, forward, a[0])
    if how == "leaving":
        rest = [ReplicaPort(i, f"a-{i}") for i in a[1:]]
        dataplane.set_replicas(XC, Side.A, [ReplicaPort(a[0], f"a-{a[0]}", ReplicaState.LEAVING), *rest])
    else:
        dataplane.set_replicas(XC, Side.A, [ReplicaPort(i, f"a-{i}") for i in a[1:]])
    assert target(dataplane, forward, a[1]) == server
    assert target(dataplane, reply, server) == a[1]
    assert collisions(dataplane) == 0


@pytest.mark.parametrize("v6", [False, True], ids=["icmp", "icmpv6"])
def test_address_only_keys_keep_following_the_latest_sender(dataplane, ports, v6: bool) -> None:
    """ICMP echo (and ARP, ND) are keyed by addresses: every conversation between two addresses
    shares the key by design, so a second sender is no collision."""
    a, _ = ports
    src, dst = ("fd05::1", "fd03::1") if v6 else (NAT_IP, SERVER)
    proto = frames.ICMPV6 if v6 else frames.ICMP
    ping, pong = frames.flow_frame(src, dst, proto), frames.flow_frame(dst, src, proto)
    server = target(dataplane, ping, a[0])
    assert target(dataplane, ping, a[1]) == server
    assert target(dataplane, pong, server) == a[1]
    assert collisions(dataplane) == 0


def test_collisions_reach_the_metrics(dataplane, ports) -> None:
    a, _ = ports
    forward, _ = outer(3)
    target(dataplane, forward, a[0])
    for _ in range(4):
        target(dataplane, forward, a[2])
    families: dict[str, Metric] = {m.name: m for m in DataplaneCollector(dataplane, PortIndex()).collect()}
    samples = {
        s.labels["event"]: s.value
        for s in families["flexsfc_dataplane_events"].samples
        if "event" in s.labels
    }
    assert samples["session_collision"] == 4
    assert samples["icmp_error_followed"] == 0


def test_a_leaving_replicas_last_packets_of_a_flow_it_lost_are_no_collision(dataplane, ports) -> None:
    """The flow was re-hashed away from a leaving replica (its replies found it gone); what the
    leaving replica still sends of it gets out, uncounted, and the session keeps the new replica."""
    a, _ = ports
    forward, reply = outer(4)
    server = target(dataplane, forward, a[0])
    rest = [ReplicaPort(i, f"a-{i}") for i in a[1:]]
    dataplane.set_replicas(XC, Side.A, [ReplicaPort(a[0], f"a-{a[0]}", ReplicaState.LEAVING), *rest])
    moved = target(dataplane, reply, server)
    assert moved in a[1:]
    assert target(dataplane, forward, a[0]) == server
    assert target(dataplane, reply, server) == moved
    assert collisions(dataplane) == 0
