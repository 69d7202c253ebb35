"""The cross-connection program on crafted frames through BPF_PROG_TEST_RUN (real kernel, real maps).

Ports are veth pairs in a private host namespace; the peers stay down so no stray packet (IPv6
MLD, router solicitations) disturbs the counters the verdicts are read from.
"""

import ctypes
import ipaddress
import os
import random
import struct
import time
from dataclasses import dataclass
from typing import Any

import pytest

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import Neighbour, RedirectMode, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.ports import states
from flexsfc.dataplane.ports.leaving import retire_ports
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

MAC_A = "02:aa:00:00:00:01"
MAC_B = "02:bb:00:00:00:01"
IP_A, IP_B = "10.1.0.1", "10.1.0.2"
IP6_A, IP6_B = "fd00::1", "fd00::2"


@dataclass
class Xc:
    dp: Dataplane
    a: list[int]  # side A port ifindexes
    b: list[int]
    name: str = "xc-test"

    def replicas_b(self, states: dict[int, ReplicaState] | None = None) -> list[ReplicaPort]:
        states = states or {}
        return [ReplicaPort(i, f"b-{i}", states.get(i, ReplicaState.ACTIVE)) for i in self.b]


@pytest.fixture
def xc(host, dataplane) -> Xc:
    a = [host.add_port().ifindex for _ in range(2)]
    b = [host.add_port().ifindex for _ in range(4)]
    setup = Xc(dataplane, a, b)
    dataplane.ensure_xc(setup.name, maglev_table_size=1021)
    dataplane.set_replicas(setup.name, Side.A, [ReplicaPort(i, f"a-{i}") for i in a])
    dataplane.set_replicas(setup.name, Side.B, setup.replicas_b())
    dataplane.set_neighbours(setup.name, Side.A, [Neighbour(IP_A, MAC_A), Neighbour(IP6_A, MAC_A)])
    dataplane.set_neighbours(setup.name, Side.B, [Neighbour(IP_B, MAC_B), Neighbour(IP6_B, MAC_B)])
    return setup


def _flow(i: int, proto: int = frames.UDP, v6: bool = False) -> tuple[bytes, bytes]:
    """Forward and reverse frames of flow number i (client side A, server side B)."""
    src = f"fd00:1::{i + 1:x}" if v6 else str(ipaddress.IPv4Address("10.2.0.0") + i + 1)
    dst = "fd00:2::1" if v6 else "10.3.0.1"
    sport, dport = 10000 + i % 50000, 80
    return frames.flow_frame(src, dst, proto, sport, dport), frames.flow_frame(dst, src, proto, dport, sport)


def _target(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    verdict = progtest.run(dp, frame, ifindex)
    assert verdict.redirected, verdict
    assert verdict.data == frame, "forwarded headers must not change"
    assert verdict.target is not None
    return verdict.target


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [frames.TCP, frames.UDP, frames.SCTP, "icmp"])
def test_flow_goes_to_one_replica_and_returns_by_its_session(xc: Xc, proto, v6: bool) -> None:
    proto = (frames.ICMPV6 if v6 else frames.ICMP) if proto == "icmp" else proto
    forward, reverse = _flow(7, proto, v6)
    target = _target(xc.dp, forward, xc.a[0])
    assert target in xc.b
    assert _target(xc.dp, reverse, target) == xc.a[0]
    for _ in range(3):
        assert _target(xc.dp, forward, xc.a[0]) == target
    assert xc.dp.session_count(xc.name) == 1
    assert xc.dp.event_stats()["session_created"] == 1


def test_reply_from_other_side_first_creates_the_shared_session(xc: Xc) -> None:
    forward, reverse = _flow(3)
    target_a = _target(xc.dp, reverse, xc.b[2])
    assert target_a in xc.a
    assert _target(xc.dp, forward, target_a) == xc.b[2]
    [entry] = xc.dp.sessions(xc.name)
    assert (entry.ifindex_a, entry.ifindex_b) == (target_a, xc.b[2])


def test_flow_moved_upstream_is_followed_on_the_return_path(xc: Xc) -> None:
    """Its side-A replica left, so the flow was re-hashed upstream. (While the recorded replica is
    still live, a second sender is a collision and the session stays: test_collision.py.)"""
    forward, reverse = _flow(5)
    target = _target(xc.dp, forward, xc.a[0])
    leaving = ReplicaPort(xc.a[0], f"a-{xc.a[0]}", ReplicaState.LEAVING)
    xc.dp.set_replicas(xc.name, Side.A, [leaving, ReplicaPort(xc.a[1], f"a-{xc.a[1]}")])
    assert _target(xc.dp, forward, xc.a[1]) == target  # same session, new side-A replica
    assert _target(xc.dp, reverse, target) == xc.a[1]


def test_the_flow_cache_follows_the_session_table(xc: Xc) -> None:
    """A session gone from its table (deleted here, as the agent's idle sweep would) is chosen again
    from the Maglev table at the entry's next refresh at the latest (FLOW_CACHE_REFRESH_JIFFIES after
    it last went through the tables); meanwhile the cached pair is still a live port of the right
    side, and afterwards both directions follow the new session. An unconfirmed flow's cached entry
    never keeps the other side's first packet from the tables (it confirms the flow). Pinned to one
    CPU: the cache is per CPU (test runs execute on the caller's CPU)."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        _check_cache_follows_table(xc)
    finally:
        os.sched_setaffinity(0, affinity)


def _check_cache_follows_table(xc: Xc) -> None:
    forward, reverse = _flow(9)
    first = _target(xc.dp, forward, xc.a[0])
    assert _target(xc.dp, forward, xc.a[0]) == first  # the second packet caches the (unconfirmed) flow
    assert xc.dp.session_count(xc.name) == 0
    assert _target(xc.dp, reverse, first) == xc.a[0]  # not served from the cache: it confirms the flow
    assert xc.dp.session_count(xc.name) == 1
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b({first: ReplicaState.DRAINING}))
    for key in libbpf.map_keys(xc.dp.map_fd("sessions"), maps.FlowKey4):
        assert libbpf.map_delete(xc.dp.map_fd("sessions"), key)
    deleted = time.monotonic()
    targets = [_target(xc.dp, forward, xc.a[0])]
    while targets[-1] == first and time.monotonic() - deleted < 3:
        targets.append(_target(xc.dp, forward, xc.a[0]))
    elapsed = time.monotonic() - deleted
    # 64 jiffies: 0.064 s at HZ = 1000 up to 0.64 s at HZ = 100 (plus this loop's own pace).
    assert targets[-1] != first and elapsed < 1.5, (elapsed, len(targets))
    assert set(targets[:-1]) <= {first}
    [entry] = xc.dp.sessions(xc.name)
    assert entry.ifindex_b == targets[-1] != first and not entry.confirmed
    assert _target(xc.dp, reverse, targets[-1]) == xc.a[0]


def test_new_flows_spread_over_the_replicas(xc: Xc) -> None:
    for i in range(2000):
        forward, _ = _flow(i, frames.TCP if i % 2 else frames.UDP, v6=i % 3 == 0)
        assert (
            libbpf.prog_test_run(xc.dp.prog_fd, forward, ifindex=xc.a[0]).retval == progtest.TC_ACT_REDIRECT
        )
    created = {i: s.sessions_created for i, s in xc.dp.port_stats().items() if i in xc.b}
    assert sum(created.values()) == 2000
    assert all(375 <= n <= 625 for n in created.values()), created


def test_draining_replica_keeps_its_sessions_and_gets_no_new_one(xc: Xc) -> None:
    established = {i: _target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(200)}
    drained = xc.b[0]
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b({drained: ReplicaState.DRAINING}))
    assert drained not in xc.dp.maglev_table(xc.name, Side.B)
    for i, target in established.items():
        assert _target(xc.dp, _flow(i)[0], xc.a[0]) == target
        assert _target(xc.dp, _flow(i)[1], target) == xc.a[0]
    assert all(_target(xc.dp, _flow(i)[0], xc.a[0]) != drained for i in range(200, 400))


def test_removed_replica_sessions_rehash_lazily_and_others_stay(xc: Xc) -> None:
    established = {i: _target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(200)}
    removed = xc.b[1]
    xc.dp.set_replicas(xc.name, Side.B, [r for r in xc.replicas_b() if r.ifindex != removed])
    for i, target in established.items():
        now = _target(xc.dp, _flow(i)[0], xc.a[0])
        assert now == target if target != removed else now != removed
    moved = sum(1 for t in established.values() if t == removed)
    assert xc.dp.event_stats()["session_rehashed"] == moved > 0


def _established_and_cached(xc: Xc, count: int) -> dict[int, int]:
    """Flows with sessions, each sent twice so the flow cache holds them as well."""
    established = {i: _target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(count)}
    assert all(_target(xc.dp, _flow(i)[0], xc.a[0]) == t for i, t in established.items())
    return established


def _check_leaving(xc: Xc, established: dict[int, int], leaving: int) -> None:
    """Nothing goes into a leaving port any more, not even a new flow that hashes onto it (the
    table may still hold it); what comes out of it still gets through."""
    on_leaving = [i for i, t in established.items() if t == leaving]
    assert on_leaving
    for i in on_leaving:
        assert _target(xc.dp, _flow(i)[1], leaving) == xc.a[0]
    for i, target in established.items():
        now = _target(xc.dp, _flow(i)[0], xc.a[0])
        assert now == target if target != leaving else now != leaving
        assert _target(xc.dp, _flow(i)[1], now) == xc.a[0]
    fresh = {i: _target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(1000, 3000)}
    assert leaving not in fresh.values()
    assert all(_target(xc.dp, _flow(i)[0], xc.a[1]) == t for i, t in fresh.items())
    assert xc.dp.drop_stats()["no_replica"] == 0


def test_leaving_replica_gets_nothing_and_what_it_sends_gets_out(xc: Xc) -> None:
    established = _established_and_cached(xc, 200)
    leaving = xc.b[1]
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b({leaving: ReplicaState.LEAVING}))
    assert leaving not in xc.dp.maglev_table(xc.name, Side.B)
    assert {r.ifindex: r.state for r in xc.dp.replicas(xc.name, Side.B)}[leaving] is ReplicaState.LEAVING
    _check_leaving(xc, established, leaving)


def test_ports_marked_leaving_elsewhere_stay_leaving(host, xc: Xc, pin_dir: str) -> None:
    """The CNI plugin's DEL marks ports leaving through the pins (another process, no facade): the
    program follows at once, and the facade keeps them leaving whatever it is told afterwards."""
    established = _established_and_cached(xc, 200)
    leaving = xc.b[2]
    stranger = host.add_port().ifindex  # an interface that is no port
    assert retire_ports(pin_dir, [leaving, xc.b[2], stranger, 2**30]) == [leaving]
    _check_leaving(xc, established, leaving)
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b())  # an agent that still sees the pod running
    assert leaving not in xc.dp.maglev_table(xc.name, Side.B)
    assert {r.ifindex: r.state for r in xc.dp.replicas(xc.name, Side.B)}[leaving] is ReplicaState.LEAVING
    with Dataplane(pin_dir) as reopened:
        states = {r.ifindex: r.state for r in reopened.replicas(xc.name, Side.B)}
    assert states[leaving] is ReplicaState.LEAVING
    assert retire_ports(pin_dir + "-none", [leaving]) == []


def test_a_leaving_mark_written_while_the_agent_updates_the_port_survives(
    xc: Xc, pin_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment for the CNI plugin's mark: after the facade has read the port's state and
    before it writes the new one (here a replica turning draining). The write is a compare-and-swap,
    so the mark stays, in every CPU's copy. The interleaving is forced by running the plugin's code
    (retire_ports, through the pins) from inside that gap, just before the facade's state-byte write; a
    plain store loses the mark."""
    established = _established_and_cached(xc, 200)
    leaving = xc.b[2]
    set_state = states.set_state
    marked: list[int] = []

    def cni_marks_in_the_gap(slots: Any, slot: int, state: int) -> bool:
        if slot == xc.dp.port_slot(leaving) and not marked:
            marked.extend(retire_ports(pin_dir, [leaving]))
        return set_state(slots, slot, state)

    monkeypatch.setattr(states, "set_state", cni_marks_in_the_gap)
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b({leaving: ReplicaState.DRAINING}))
    assert marked == [leaving]
    monkeypatch.undo()
    assert set(xc.dp.port_slot_states(leaving)) == {maps.PORT_LEAVING}
    assert {r.ifindex: r.state for r in xc.dp.replicas(xc.name, Side.B)}[leaving] is ReplicaState.LEAVING
    assert leaving not in xc.dp.maglev_table(xc.name, Side.B)
    _check_leaving(xc, established, leaving)


def test_added_replica_moves_no_session_and_takes_new_flows(host, xc: Xc) -> None:
    established = {i: _target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(200)}
    xc.b.append(host.add_port().ifindex)
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b())
    for i, target in established.items():
        assert _target(xc.dp, _flow(i)[0], xc.a[0]) == target
    fresh = [_target(xc.dp, _flow(i)[0], xc.a[0]) for i in range(200, 600)]
    assert 40 <= fresh.count(xc.b[-1]) <= 120


def test_ports_with_large_ifindexes_use_the_hash_lookup(host, dataplane: Dataplane) -> None:
    base = 70000 + random.randrange(1000) * 4  # above the program's array index (65536)
    a, b = host.add_port(index=base).ifindex, host.add_port(index=base + 2).ifindex
    assert (a, b) == (base, base + 2)
    dataplane.ensure_xc("big")
    dataplane.set_replicas("big", Side.A, [ReplicaPort(a, "a")])
    dataplane.set_replicas("big", Side.B, [ReplicaPort(b, "b")])
    forward, reverse = _flow(1)
    assert _target(dataplane, forward, a) == b
    assert _target(dataplane, reverse, b) == a
    dataplane.set_replicas("big", Side.B, [])
    assert progtest.run(dataplane, reverse, b).drops == {"unknown_port": 1}


def test_arp_request_for_the_other_side_is_answered_in_place(xc: Xc) -> None:
    request = frames.arp(1, "02:00:00:00:00:a1", IP_A, "00:00:00:00:00:00", IP_B)
    verdict = progtest.run(xc.dp, request, xc.a[0])
    assert verdict.redirected and verdict.target is None
    expected = frames.arp(2, MAC_B, IP_B, "02:00:00:00:00:a1", IP_A)
    assert verdict.data[:42] == expected[:42]
    assert xc.dp.event_stats()["arp_replied"] == 1


def test_unprogrammed_arp_goes_to_one_replica_and_the_reply_is_learned(xc: Xc) -> None:
    other_mac = "02:00:00:00:00:77"
    request = frames.arp(1, MAC_A, IP_A, "00:00:00:00:00:00", "10.1.0.77")
    target = _target(xc.dp, request, xc.a[0])
    assert target in xc.b
    reply = frames.arp(2, other_mac, "10.1.0.77", MAC_A, IP_A)
    assert _target(xc.dp, reply, target) == xc.a[0]
    assert Neighbour("10.1.0.77", other_mac) in xc.dp.neighbours(xc.name, Side.B, learned=True)
    again = progtest.run(xc.dp, frames.arp(1, MAC_A, IP_A, "00:00:00:00:00:00", "10.1.0.77"), xc.a[1])
    assert again.redirected and again.target is None
    assert again.data[6:12] == bytes.fromhex(other_mac.replace(":", ""))


def test_neighbour_solicitation_is_answered_with_an_advertisement(xc: Xc) -> None:
    requester_mac = "02:00:00:00:00:a1"
    solicitation = frames.neighbour_solicitation(requester_mac, IP6_A, IP6_B)
    verdict = progtest.run(xc.dp, solicitation, xc.a[0])
    assert verdict.redirected and verdict.target is None
    data = verdict.data
    assert len(data) == 14 + 40 + 32
    assert data[:6] == bytes.fromhex(requester_mac.replace(":", ""))
    assert data[6:12] == bytes.fromhex(MAC_B.replace(":", ""))
    ip6 = data[14:]
    assert ip6[6] == frames.ICMPV6 and ip6[7] == 255
    assert ip6[8:24] == ipaddress.IPv6Address(IP6_B).packed
    assert ip6[24:40] == ipaddress.IPv6Address(IP6_A).packed
    icmp = ip6[40:]
    assert icmp[0] == 136 and struct.unpack("!I", icmp[4:8])[0] == 0x60000000
    assert icmp[8:24] == ipaddress.IPv6Address(IP6_B).packed
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == data[6:12]
    assert frames.icmpv6_checksum_ok(ip6)
    assert xc.dp.event_stats()["nd_replied"] == 1


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_fragments_follow_their_first_fragment(xc: Xc, v6: bool) -> None:
    src, dst = ("fd00:1::9", "fd00:2::1") if v6 else ("10.2.0.9", "10.3.0.1")
    udp = frames.l4(frames.UDP, 5353, 53, b"y" * 24)

    def frag(ident: int, offset: int, mf: bool, payload: bytes) -> bytes:
        if v6:
            packet = frames.ipv6(src, dst, frames.UDP, payload, frag_id=ident, mf=mf, frag_offset=offset)
            return frames.ethernet(frames.ETH_P_IPV6, packet)
        packet = frames.ipv4(src, dst, frames.UDP, payload, ident=ident, mf=mf, frag_offset=offset)
        return frames.ethernet(frames.ETH_P_IP, packet)

    targets = set()
    for ident in range(1, 41):
        first = _target(xc.dp, frag(ident, 0, True, udp), xc.a[0])
        targets.add(first)
        assert _target(xc.dp, frag(ident, 32, True, b"z" * 32), xc.a[0]) == first
        assert _target(xc.dp, frag(ident, 64, False, b"z" * 8), xc.a[0]) == first
    assert len(targets) == 1, "one 5-tuple, one session: all datagrams of the flow on one replica"
    orphan = progtest.run(xc.dp, frag(999, 32, False, b"z" * 8), xc.a[0])
    assert orphan.dropped and orphan.drops == {"frag_unknown": 1}
    assert xc.dp.event_stats()["frag_followed"] == 80


def _ipv6_with_dest_opts(count: int) -> bytes:
    udp = frames.l4(frames.UDP, 1, 2)
    payload, nxt = udp, frames.UDP
    for _ in range(count):
        payload, nxt = bytes([nxt, 0, 1, 4, 0, 0, 0, 0]) + payload, 60
    header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), nxt, 64, bytes(15) + b"\1", bytes(15) + b"\2")
    return frames.ethernet(frames.ETH_P_IPV6, header + payload)


def test_drops_are_counted_by_reason_and_never_forwarded(host, xc: Xc, dataplane: Dataplane) -> None:
    tcp = frames.flow_frame("10.2.0.1", "10.3.0.1", frames.TCP, 1, 2)
    cases = {
        "not_ip": (frames.ethernet(0x88CC, b"\0" * 46), xc.a[0]),
        "malformed": (tcp[:36], xc.a[0]),  # test_run refuses frames shorter than eth + IP header
        "unknown_port": (tcp, host.add_port().ifindex),
        "ipv6_ext": (_ipv6_with_dest_opts(5), xc.a[0]),
        "arp_unsupported": (
            frames.ethernet(frames.ETH_P_ARP, struct.pack("!HHBBH", 6, 0x800, 6, 4, 1) + bytes(20)),
            xc.a[0],
        ),
    }
    for reason, (frame, port) in cases.items():
        verdict = progtest.run(dataplane, frame, port)
        assert verdict.dropped and verdict.target is None, reason
        assert verdict.drops == {reason: 1}
    # Walking fewer extension headers than the limit still forwards.
    assert progtest.run(dataplane, _ipv6_with_dest_opts(3), xc.a[0]).redirected

    dataplane.set_replicas(xc.name, Side.B, [])
    verdict = progtest.run(dataplane, tcp, xc.a[0])
    assert verdict.dropped and verdict.drops == {"no_replica": 1}


def test_reopened_pins_keep_ids_seed_and_sessions(xc: Xc, pin_dir: str) -> None:
    forward, _ = _flow(11)
    target = _target(xc.dp, forward, xc.a[0])
    xc.dp.set_redirect_mode(RedirectMode.REDIRECT)
    second = Dataplane(pin_dir, seed=999)
    try:
        assert second.reopened
        assert second.redirect_mode is RedirectMode.REDIRECT  # a reader keeps the pinned mode
        assert second.seed == xc.dp.seed == 12345
        assert second.list_xcs() == xc.dp.list_xcs()
        assert second.replicas(xc.name, Side.B) == xc.dp.replicas(xc.name, Side.B)
        assert second.maglev_table(xc.name, Side.B) == xc.dp.maglev_table(xc.name, Side.B)
        assert _target(second, forward, xc.a[0]) == target
        xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b()[:2])
        second.refresh()
        assert second.replicas(xc.name, Side.B) == xc.dp.replicas(xc.name, Side.B)
    finally:
        second.close()


def test_an_unchanged_replica_set_keeps_its_live_table_also_after_a_reopen(xc: Xc, pin_dir: str) -> None:
    def live_half(dp: Dataplane) -> tuple[int, int]:
        return dp.live_table_region(xc.name, Side.B)

    before = live_half(xc.dp)
    xc.dp.set_replicas(xc.name, Side.B, xc.replicas_b())
    assert live_half(xc.dp) == before
    with Dataplane(pin_dir) as second:
        second.set_replicas(xc.name, Side.B, xc.replicas_b())
        assert live_half(second) == before  # compared with the live table itself
        table = second.maglev_table(xc.name, Side.B)
        second.set_replicas(xc.name, Side.B, xc.replicas_b()[:3])
        assert live_half(second) != before
        second.set_replicas(xc.name, Side.B, xc.replicas_b())
        assert second.maglev_table(xc.name, Side.B) == table  # the same table again, in the other half


def test_detach_removes_only_our_filter(xc: Xc) -> None:
    port = xc.b[3]
    # Somebody else's filter (another handle and priority) on the same clsact qdisc.
    libbpf.tc_attach_ingress(port, xc.dp.prog_fd, handle=1, priority=1)
    assert xc.dp.attached(port)
    xc.dp.set_replicas(xc.name, Side.B, [r for r in xc.replicas_b() if r.ifindex != port])
    assert not xc.dp.attached(port)
    assert libbpf.tc_query_ingress(port, handle=1, priority=1) is not None
    libbpf.tc_detach_ingress(port, handle=1, priority=1)


def test_bad_input_names_the_field_and_changes_nothing(host, xc: Xc) -> None:
    before = xc.dp.replicas(xc.name, Side.B)
    with pytest.raises(ValueError, match="unknown, call ensure_xc"):
        xc.dp.set_replicas("nope", Side.A, [])
    with pytest.raises(ValueError, match=r"replicas\[1\].ifindex .* listed twice"):
        xc.dp.set_replicas(xc.name, Side.B, [ReplicaPort(xc.b[0], "x"), ReplicaPort(xc.b[0], "y")])
    with pytest.raises(ValueError, match=r"replicas\[4\].ifindex 999999: no such interface"):
        xc.dp.set_replicas(xc.name, Side.B, [*xc.replicas_b(), ReplicaPort(999999, "ghost")])
    with pytest.raises(ValueError, match=r"replicas\[0\].ifindex .* already a port"):
        xc.dp.set_replicas(xc.name, Side.B, [ReplicaPort(xc.a[0], "stolen")])
    with pytest.raises(ValueError, match="maglev_table_size 4096"):
        xc.dp.ensure_xc("other", maglev_table_size=4096)
    with pytest.raises(ValueError, match=r"neighbours\[0\].mac"):
        xc.dp.set_neighbours(xc.name, Side.A, [Neighbour(IP_A, "zz")])
    assert xc.dp.replicas(xc.name, Side.B) == before
    assert all(xc.dp.attached(i) for i in xc.b)


def test_delete_xc_detaches_and_forgets_everything(xc: Xc) -> None:
    _target(xc.dp, _flow(1)[0], xc.a[0])
    xc.dp.delete_xc(xc.name)
    assert xc.dp.list_xcs() == {}
    assert not any(xc.dp.attached(i) for i in xc.a + xc.b)
    assert xc.dp.port_stats() == {}
    assert xc.dp.neighbours  # the API still works on an empty data plane
    xc.dp.delete_xc(xc.name)  # idempotent


def test_map_layouts_match_the_python_mirrors(dataplane: Dataplane) -> None:
    from flexsfc.dataplane import maps

    assert set(maps.MAP_LAYOUTS) | set(maps.RING_BUFFERS) == set(maps.MAP_NAMES)
    for name, (key, value) in maps.MAP_LAYOUTS.items():
        info = libbpf.map_info(dataplane.map_fd(name))
        assert (info.key_size, info.value_size) == (ctypes.sizeof(key), ctypes.sizeof(value)), name
    assert libbpf.map_info(dataplane.map_fd("sessions")).max_entries == dataplane.session_capacity == 65536
    assert dataplane.session_capacity_v6 == 16384
    assert libbpf.map_info(dataplane.map_fd("maglev_pool")).max_entries == maps.POOL_SLOTS
    for name, capacity in maps.MAP_CAPACITIES.items():
        assert libbpf.map_info(dataplane.map_fd(name)).max_entries == capacity, name


def test_pins_of_an_incompatible_layout_are_refused(pin_dir: str, host) -> None:
    from flexsfc.dataplane.facade import DataplaneError

    Dataplane(pin_dir).close()
    # Replace one pinned map by one with another value size, as an older version might have left.
    os.unlink(os.path.join(pin_dir, "port_slots"))
    other = Dataplane(f"{pin_dir}-other")
    try:
        libbpf.obj_pin(other.map_fd("ports"), os.path.join(pin_dir, "port_slots"))
    finally:
        other.destroy()
    with pytest.raises(
        DataplaneError, match=r"map port_slots has key/value sizes .* another flexsfc version"
    ):
        Dataplane(pin_dir)


def test_teardown_opens_no_dataplane_and_takes_incomplete_pins(pin_dir: str, host) -> None:
    """destroy_pinned (the local runtime's cleanup after its supervisor died) detaches every port the
    pins record and removes them, also a set a Dataplane would refuse to open."""
    from flexsfc.dataplane.facade import DataplaneError
    from flexsfc.dataplane.pins import destroy_pinned

    port = host.add_port().ifindex
    with Dataplane(pin_dir, session_capacity=1024) as dp:
        dp.ensure_xc("teardown")
        dp.set_replicas("teardown", Side.A, [ReplicaPort(port, "p")])
        assert dp.attached(port)
    os.unlink(os.path.join(pin_dir, maps.PROGRAM_NAME))
    with pytest.raises(DataplaneError, match="incomplete pinned state"):
        Dataplane(pin_dir)
    destroy_pinned(pin_dir)
    assert not dp.attached(port)
    assert not os.path.exists(pin_dir)
