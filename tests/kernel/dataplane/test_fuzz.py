"""Fuzz: 100k+ random, mutated and truncated frames through BPF_PROG_TEST_RUN on two cross-connections.

Every frame must be dropped or redirected, never passed up the host stack (TC_ACT_OK). Every redirect
must be accounted for: either to a port of the other side of the frame's own cross-connection (the
per-port counters the program bumps where it picks a target) or an ARP/ND reply sent back out of the
ingress port. Ports of the other cross-connection and of the ingress side never receive anything.
"""

import random
import struct

import pytest

from flexsfc.dataplane import libbpf
from flexsfc.dataplane.api import Neighbour, ReplicaPort
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

RUNS_PER_PORT = 25_500  # x 4 ingress ports > 100k frames the program actually ran on


def _seeds() -> list[bytes]:
    """Valid frames of every kind the program parses: the mutations start from these."""
    out = [
        frames.flow_frame("10.0.0.1", "10.0.0.2", frames.TCP, 1, 2),
        frames.flow_frame("10.0.0.1", "10.0.0.2", frames.ICMP),
        frames.flow_frame("fd00::1", "fd00::2", frames.UDP, 3, 4),
        frames.flow_frame("fd00::1", "fd00::2", frames.SCTP, 3, 4),
        frames.arp(1, "02:00:00:00:00:01", "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2"),
        frames.arp(2, "02:00:00:00:00:02", "10.0.0.2", "02:00:00:00:00:01", "10.0.0.1"),
        frames.neighbour_solicitation("02:00:00:00:00:01", "fd00::1", "fd00::2"),
        frames.neighbour_advertisement("02:00:00:00:00:02", "fd00::2", "02:00:00:00:00:01", "fd00::1"),
        frames.ethernet(frames.ETH_P_IP, frames.ipv4("10.0.0.1", "10.0.0.2", 17, bytes(40), mf=True)),
        frames.ethernet(frames.ETH_P_IP, frames.ipv4("10.0.0.1", "10.0.0.2", 17, bytes(40), frag_offset=64)),
        frames.ethernet(
            frames.ETH_P_IPV6, frames.ipv6("fd00::1", "fd00::2", 6, bytes(40), frag_id=7, mf=True)
        ),
        *_icmp_error_seeds(),
    ]
    return out


def _icmp_error_seeds() -> list[bytes]:
    """ICMP/ICMPv6 errors quoting the seed flows above (so that mutations hit both the followed and
    the fallback path), and IPv6 fragments with Destination Options after the Fragment header."""
    tcp4 = frames.ipv4("10.0.0.1", "10.0.0.2", frames.TCP, frames.l4(frames.TCP, 1, 2))
    udp6 = frames.ipv6("fd00::1", "fd00::2", frames.UDP, frames.l4(frames.UDP, 3, 4))
    dstopts_udp = struct.pack("!BBBB4x", frames.UDP, 0, 1, 4) + frames.l4(frames.UDP, 3, 4)
    out = []
    for icmp_type, code, rest, quoted in [(3, 4, 1280, tcp4), (11, 0, 0, tcp4[:28]), (12, 0, 0, tcp4)]:
        body = struct.pack("!BBHI", icmp_type, code, 0, rest) + quoted
        out.append(frames.ethernet(frames.ETH_P_IP, frames.ipv4("10.0.0.9", "10.0.0.1", frames.ICMP, body)))
    for icmp_type, rest, quoted in [(2, 1280, udp6), (1, 0, udp6[:48]), (3, 0, udp6), (4, 40, udp6)]:
        body = struct.pack("!BBHI", icmp_type, 0, 0, rest) + quoted
        out.append(frames.ethernet(frames.ETH_P_IPV6, frames.ipv6("fd00::9", "fd00::1", frames.ICMPV6, body)))
    quoted_ext = bytearray(udp6[:40]) + struct.pack("!BBHI", 60, 0, 1, 5) + dstopts_udp  # frag, dst opts
    quoted_ext[6] = 44
    body = struct.pack("!BBHI", 2, 0, 0, 1280) + bytes(quoted_ext)
    out.append(frames.ethernet(frames.ETH_P_IPV6, frames.ipv6("fd00::9", "fd00::1", frames.ICMPV6, body)))
    for offset, more in [(0, True), (64, True), (128, False)]:
        frag = struct.pack("!BBHI", 60, 0, offset // 8 << 3 | int(more), 11)
        payload = dstopts_udp if offset == 0 else bytes([60, 255]) * 16
        out.append(frames.ethernet(frames.ETH_P_IPV6, frames.ipv6("fd00::1", "fd00::2", 44, frag + payload)))
    return out


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.random()
    if kind < 0.2:  # pure noise with a plausible or random ethertype
        body = rng.randbytes(rng.randrange(0, 200))
        ethertype = rng.choice([frames.ETH_P_IP, frames.ETH_P_IPV6, frames.ETH_P_ARP, rng.getrandbits(16)])
        return frames.ethernet(ethertype, body)
    frame = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 8)):  # flip bytes, mostly in the headers
        pos = min(int(rng.expovariate(1 / 30)), len(frame) - 1)
        frame[pos] = rng.getrandbits(8)
    if kind < 0.6:  # truncate
        frame = frame[: rng.randrange(14, len(frame) + 1)]
    return bytes(frame)


def test_random_and_truncated_frames_never_leave_their_cross_connection(host, dataplane) -> None:
    xcs = {}
    for name in ("fuzz-1", "fuzz-2"):
        a = [host.add_port().ifindex for _ in range(1)]
        b = [host.add_port().ifindex for _ in range(2)]
        dataplane.ensure_xc(name, maglev_table_size=251)
        dataplane.set_replicas(name, Side.A, [ReplicaPort(i, f"{name}-a{i}") for i in a])
        dataplane.set_replicas(name, Side.B, [ReplicaPort(i, f"{name}-b{i}") for i in b])
        dataplane.set_neighbours(name, Side.B, [Neighbour("10.0.0.2", "02:00:00:00:00:02")])
        dataplane.set_neighbours(name, Side.A, [Neighbour("fd00::1", "02:00:00:00:00:01")])
        xcs[name] = (a, b)

    rng = random.Random(20240601)
    seeds = _seeds()
    ran = refused = 0
    for name, (a, b) in xcs.items():
        for ingress, allowed in [(a[0], set(b)), (b[0], set(a))]:
            before = dataplane.port_stats()
            replies_before = _replies(dataplane)
            redirected = ran_here = 0
            while ran_here < RUNS_PER_PORT:
                frame = _mutate(rng, seeds)
                try:
                    result = libbpf.prog_test_run(dataplane.prog_fd, frame, ifindex=ingress)
                except libbpf.BpfError:
                    refused += 1  # the kernel's test_run rejects frames without a full L3 header
                    continue
                ran_here += 1
                assert result.retval in (progtest.TC_ACT_SHOT, progtest.TC_ACT_REDIRECT), frame.hex()
                redirected += result.retval == progtest.TC_ACT_REDIRECT
            after = dataplane.port_stats()
            delivered = {i: after[i].to_port_packets - before[i].to_port_packets for i in after}
            assert all(n == 0 for i, n in delivered.items() if i not in allowed), (name, ingress, delivered)
            ran += ran_here
            replies = _replies(dataplane) - replies_before
            assert redirected == sum(delivered.values()) + replies
    assert ran >= 100_000, (ran, refused)
    drops = dataplane.drop_stats()
    assert drops["malformed"] > 0 and drops["not_ip"] > 0
    events = dataplane.event_stats()
    assert events["icmp_error_followed"] > 0 and events["frag_followed"] > 0  # both paths were fuzzed


def _replies(dataplane) -> int:
    events = dataplane.event_stats()
    return events["arp_replied"] + events["nd_replied"]
